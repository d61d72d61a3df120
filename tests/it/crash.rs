//! SIGKILL crash test: a real child process appends with fsync=always and
//! reports acknowledged batches through a pipe; it is killed at random
//! moments, and every acknowledged record must be present and intact after
//! recovery, round after round on the same data.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use ringlog::cli::worker::{worker_batch_records, worker_value};
use ringlog::storage::PartitionLog;

use crate::common::{on_executor, read_all, small_config};

/// (appender, sequence, records) of every acknowledged batch, by base offset.
type Acks = BTreeMap<u64, (u32, u64, u32)>;

fn run_worker_until_killed(dir: &std::path::Path, kill_after: Duration, fsync: &str) -> Acks {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["__append-worker", "--appenders", "4", "--segment-bytes", "65536", "--fsync", fsync, "--dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker");
    let stdout = child.stdout.take().unwrap();
    let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Acks::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["ready", _] => {
                    let _ = ready_sender.send(());
                }
                ["ack", base, appender, sequence, records] => {
                    acks.insert(
                        base.parse().unwrap(),
                        (appender.parse().unwrap(), sequence.parse().unwrap(), records.parse().unwrap()),
                    );
                }
                _ => {} // a line cut by the kill
            }
        }
        acks
    });
    ready_receiver.recv_timeout(Duration::from_secs(30)).expect("worker became ready");
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the worker");
    child.wait().unwrap();
    reader.join().unwrap()
}

/// A process crash never fences: buffers in flight complete in any order
/// when the process dies, so a later buffer can be on disk while the
/// rewrite of an earlier buffer's last sector is not; that sector holds
/// the older tail and its zero padding, a torn write recovery cuts
/// (docs/RECOVERY.md). Any fence fails the test.
fn assert_not_fenced(path: &std::path::Path) {
    let dir = path.to_path_buf();
    let fence = on_executor(move || async move {
        let log = PartitionLog::open(&dir, small_config(), None).await.expect("recovery succeeds");
        let fence = log.snapshot().fence;
        log.close().await.unwrap();
        fence
    });
    assert!(fence.is_none(), "a crash fenced the partition: {fence:?}");
}

fn verify(dir: &std::path::Path, acks: &Acks) -> u64 {
    assert_not_fenced(dir);
    let path = dir.to_path_buf();
    let records = on_executor(move || async move {
        let log = PartitionLog::open(&path, small_config(), None).await.expect("recovery succeeds");
        assert!(log.snapshot().fence.is_none(), "never fenced");
        let all = read_all(&log, 0).await;
        log.close().await.unwrap();
        all
    });
    for (index, (offset, _)) in records.iter().enumerate() {
        assert_eq!(*offset, index as u64, "offsets are dense");
    }
    for (&base, &(appender, sequence, count)) in acks {
        assert_eq!(count, worker_batch_records(sequence));
        for record in 0..count {
            let offset = base + u64::from(record);
            let found = records.get(offset as usize).map(|(_, value)| value.as_str());
            assert_eq!(
                found,
                Some(worker_value(appender, sequence, record).as_str()),
                "acknowledged record at offset {offset} lost or damaged"
            );
        }
    }
    records.len() as u64
}

fn crash_rounds(rounds: usize, fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join("p");
    let mut all_acks = Acks::new();
    let mut random = rand::thread_rng();
    let mut rounds_with_acks = 0;
    for round in 0..rounds {
        let kill_after = Duration::from_millis(random.gen_range(20..250));
        let acks = run_worker_until_killed(&partition, kill_after, fsync);
        rounds_with_acks += usize::from(!acks.is_empty());
        // Offsets assigned in this round continue after what survived before.
        all_acks.retain(|base, _| !acks.contains_key(base));
        all_acks.extend(acks.iter().map(|(base, ack)| (*base, *ack)));
        let total = verify(&partition, &all_acks);
        println!(
            "round {round}: killed after {kill_after:?}, {} acks this round, {total} records recovered",
            acks.len()
        );
    }
    // A round killed before its first ack checks nothing: most must ack.
    assert!(rounds_with_acks * 2 >= rounds, "only {rounds_with_acks} of {rounds} rounds acknowledged anything");
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_record() {
    crash_rounds(24, "always");
}
