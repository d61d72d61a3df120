# Sourced by the bench scripts: what the machine did during one command.
#   usage_begin DIR; <command>; usage_end  -> prints
#   "disk write W MB/s, read R MB/s; CPU busy B % (iowait I %)"
# Disk figures are the device under DIR (/proc/diskstats), so they count
# every process's bytes that reached the disk, not what a program claims.

usage_device() { # dir -> device name in /proc/diskstats
    local source
    source=$(df --output=source "$1" | tail -1)
    basename "$source"
}

usage_sample() { # device -> "read_sectors written_sectors busy_ticks iowait_ticks total_ticks nanos"
    local disk cpu
    disk=$(awk -v d="$1" '$3 == d {print $6, $10}' /proc/diskstats)
    cpu=$(awk '$1 == "cpu" {busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; print busy, $6, total}' /proc/stat)
    echo "${disk:-0 0} $cpu $(date +%s%N)"
}

usage_begin() { # dir
    usage_dev=$(usage_device "$1")
    usage_start=$(usage_sample "$usage_dev")
}

usage_end() {
    local end
    end=$(usage_sample "$usage_dev")
    awk -v a="$usage_start" -v b="$end" 'BEGIN {
        split(a, s, " "); split(b, e, " ");
        seconds = (e[6] - s[6]) / 1e9; if (seconds <= 0) seconds = 1e-9;
        total = e[5] - s[5]; if (total <= 0) total = 1;
        printf "disk write %.0f MB/s, read %.0f MB/s; CPU busy %.0f %% (iowait %.0f %%)",
            (e[2] - s[2]) * 512 / seconds / 1e6, (e[1] - s[1]) * 512 / seconds / 1e6,
            100 * (e[3] - s[3]) / total, 100 * (e[4] - s[4]) / total
    }'
}
