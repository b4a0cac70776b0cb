//! `espgate check`: the example configs pass; bad ones fail naming file,
//! line and field.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn espgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_espgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run espgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn example_configs_check_ok() {
    for (file, addr, protects) in [
        (
            "examples/site1.toml",
            "10.255.1.2",
            "192.168.100.0/24 192.168.200.0/24",
        ),
        ("examples/site2.toml", "10.255.2.2", "172.16.10.0/24"),
    ] {
        let out = espgate(&["check", "-c", file]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        assert!(
            stdout.contains(&format!("local address: {addr}")),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("protects {protects}")), "{stdout}");
        assert!(stdout.contains("aes256-sha256-modp2048"), "{stdout}");
        assert!(stdout.contains("pfs modp2048"), "{stdout}");
        assert!(
            !stdout.contains("s2s-demo-key"),
            "the PSK must never be printed"
        );
        assert!(stdout.trim_end().ends_with("config OK"));
    }
}

fn write_variant(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site1.toml"))
            .unwrap();
    assert!(
        src.contains(from),
        "fixture text {from:?} not in site1.toml"
    );
    let path = dir.join("gw.toml");
    std::fs::write(&path, src.replace(from, to)).unwrap();
    path
}

#[test]
fn bad_value_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "replay_window = 64", "replay_window = 8192");
    let src = std::fs::read_to_string(&path).unwrap();
    let line = src
        .lines()
        .position(|l| l.starts_with("replay_window"))
        .unwrap()
        + 1;
    let out = espgate(&["check", "-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:{line}:", path.display())),
        "{err}"
    );
    assert!(err.contains("replay_window"), "{err}");
    assert!(err.contains("64..=4096"), "{err}");
}

#[test]
fn world_readable_psk_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("site2.psk");
    std::fs::write(&key, "topsecret\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = write_variant(
        dir.path(),
        "psk = \"s2s-demo-key-change-me\"",
        "psk_file = \"site2.psk\"",
    );
    let out = espgate(&["check", "-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("site2.psk") && err.contains("0644"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = espgate(&["check", "-c", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("psk file, 9 bytes"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = espgate(&["check", "-c", "/nonexistent/gw.toml"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/gw.toml: cannot read"));
}
