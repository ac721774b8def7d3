//! A short run of the fault and soak program (`src/bin/soak.rs`): every
//! fault it injects, and not one wrong or failed call, nor a lock left behind.
//! The full run, and its figures, are in the README's Reliability section.

use std::collections::HashMap;
use std::process::Command;

#[test]
fn a_short_soak_under_every_fault_has_no_wrong_or_failed_call() {
    let output = Command::new(env!("CARGO_BIN_EXE_soak"))
        .args(["--seconds", "16"])
        .output()
        .expect("run the soak program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "soak failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: HashMap<&str, f64> = stdout
        .lines()
        .last()
        .expect("a line of figures")
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name, value.parse().expect("a number")))
        .collect();
    println!("{stdout}");
    assert!(
        figures["faults"] >= 7.0,
        "every kind of fault ran: {stdout}"
    );
    assert!(figures["calls"] > 1000.0, "{stdout}");
    assert_eq!(figures["wrong"], 0.0, "{stdout}");
    assert_eq!(figures["failed"], 0.0, "{stdout}");
    assert_eq!(figures["leaked_locks"], 0.0, "{stdout}");
    // Generous for a loaded CI machine; what it catches is a call stuck on a
    // stalled server, which takes seconds or forever without the deadline.
    assert!(figures["fault_max_ms"] < 2000.0, "{stdout}");
}
