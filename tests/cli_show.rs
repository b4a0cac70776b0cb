//! `espgate show` speaks the control-socket line protocol: a stand-in
//! gateway records the request and answers; the CLI prints the answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

/// Serves exactly one connection: returns the request line it got.
fn one_shot(path: &std::path::Path, answer: &'static str) -> std::thread::JoinHandle<String> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(answer.as_bytes()).unwrap();
        line
    })
}

fn show(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_espgate"))
        .arg("show")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn show_sends_the_request_and_prints_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    for (what, json, expect_line) in [
        ("ike-sa", false, "show ike-sa\n"),
        ("ipsec-sa", true, "show ipsec-sa json\n"),
        ("access-list", false, "show access-list\n"),
    ] {
        let sock = dir.path().join(format!("{what}.sock"));
        let server = one_shot(&sock, "IKEv2 SAs:\n\nSession-id:1\n");
        let mut args = vec![what, "--socket", sock.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = show(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "IKEv2 SAs:\n\nSession-id:1\n"
        );
        assert_eq!(server.join().unwrap(), expect_line);
    }
}

#[test]
fn show_reports_a_refusal_and_a_missing_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("gw.sock");
    let server = one_shot(&sock, "error: not ready\n");
    let out = show(&["ike-sa", "--socket", sock.to_str().unwrap()]);
    assert!(!out.status.success());
    server.join().unwrap();
    let out = show(&[
        "ike-sa",
        "--socket",
        dir.path().join("none.sock").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none.sock") && err.contains("espgate run"),
        "{err}"
    );
}
