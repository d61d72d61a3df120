//! `ringlog check DIR [--repair] [--json]`.

use std::path::Path;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{fail, EXIT_FAILURE, EXIT_OK};
use crate::storage::check::{check_partition, find_partitions, total_segment_bytes, CheckReport};
use crate::storage::lock::DataDirLock;
use crate::storage::StorageConfig;

/// Run the check and print the report.
pub fn run(dir: &Path, repair: bool, json: bool) -> ExitCode {
    if !dir.is_dir() {
        return fail(format!("{} is not a directory", dir.display()), EXIT_FAILURE);
    }
    // Repair writes; it must not race a running node.
    let _lock = if repair {
        match DataDirLock::acquire(dir) {
            Ok(lock) => Some(lock),
            Err(error) => return fail(error, EXIT_FAILURE),
        }
    } else {
        None
    };
    let partitions = match find_partitions(dir) {
        Ok(partitions) => partitions,
        Err(error) => return fail(format!("cannot list {}: {error}", dir.display()), EXIT_FAILURE),
    };
    let bar = ProgressBar::with_draw_target(Some(total_segment_bytes(&partitions)), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let config = StorageConfig::default();
    let mut report = CheckReport::default();
    for partition in &partitions {
        bar.set_message(partition.display().to_string());
        let progress = |bytes: u64| bar.inc(bytes);
        if let Err(error) = check_partition(partition, &config, repair, &mut report, &progress) {
            bar.finish_and_clear();
            return fail(format!("checking {}: {error}", partition.display()), EXIT_FAILURE);
        }
    }
    bar.finish_and_clear();
    report.ok = report.errors.is_empty() || (repair && !report.repaired.is_empty());
    print_report(&report, json);
    if report.ok {
        ExitCode::from(EXIT_OK)
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

fn print_report(report: &CheckReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).expect("report serializes"));
        return;
    }
    println!(
        "{}: {} partitions, {} segments, {} batches, {} records, {} bytes",
        if report.ok { "ok" } else { "DAMAGED" },
        report.partitions,
        report.segments,
        report.batches,
        report.records,
        report.bytes
    );
    for issue in &report.errors {
        println!("  {} offset {} position {}: {}", issue.path, issue.offset, issue.position, issue.reason);
    }
    for change in &report.repaired {
        println!("  repaired: {change}");
    }
}
