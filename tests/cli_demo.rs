//! `espgate demo` is the README's first command: it must run unprivileged
//! and every one of its own checks must pass.

use std::process::Command;

#[test]
fn demo_replays_the_seed_and_all_checks_pass() {
    let out = Command::new(env!("CARGO_BIN_EXE_espgate"))
        .arg("demo")
        .output()
        .expect("run espgate demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("demo: ") && last.ends_with(" passed, 0 failed"),
        "last line: {last:?}"
    );
    // The seed's outputs are there, with both child SAs and the hit counts.
    assert!(stdout.contains("Site1# show crypto ikev2 sa"), "{stdout}");
    assert_eq!(
        stdout.matches("Child sa: local selector").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("(hitcnt=10)"), "{stdout}");
    assert!(stdout.contains("5 packets transmitted, 5 packets received, 0% packet loss"));
}
