//! Independent cross-check: scapy's `SecurityAssociation` (python
//! `cryptography` underneath) decrypts what we encapsulate, and we decap
//! what it encrypts, for every suite × IP version × ESP-in-UDP × ESN.
//! Skips with a printed reason if python3 + scapy are missing, unless
//! ESPGATE_CI=1, where that is a failure.

mod esp_util;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use esp_util::*;
use espgate_dataplane::esp::{decap_burst, encap_burst};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/esp_crosscheck.py")
}

/// A python that can import scapy (a pyenv shim may shadow the system one).
fn python_with_scapy() -> Option<String> {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args(["-c", "import scapy.layers.ipsec, cryptography"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_owned)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The SA part of a job line, as the sender `(local, remote)` sees it.
fn sa_fields(shape: &Shape, esn_hi: u32) -> String {
    let k = keys(shape.suite, 1);
    format!(
        "{:?} {} {} {} {} {} {} {}",
        shape.suite,
        hex(&k.encr),
        if k.integ.is_empty() {
            "-".into()
        } else {
            hex(&k.integ)
        },
        shape.inbound_spi().0,
        shape.site1(),
        shape.site2(),
        u8::from(shape.udp),
        if shape.esn {
            esn_hi.to_string()
        } else {
            "-".into()
        },
    )
}

/// Runs the script on `jobs` (written to a temp file) and returns its
/// output lines.
fn run(py: &str, jobs: &[String]) -> Vec<String> {
    let path =
        std::env::temp_dir().join(format!("espgate-esp-crosscheck-{}.txt", std::process::id()));
    let mut f = File::create(&path).unwrap();
    for j in jobs {
        writeln!(f, "{j}").unwrap();
    }
    drop(f);
    let out = Command::new(py)
        .arg(script())
        .stdin(File::open(&path).unwrap())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), jobs.len(), "one answer per job");
    lines
}

const SIZES: [usize; 3] = [0, 77, 1400];

#[test]
fn scapy_agrees_both_ways() {
    let Some(py) = python_with_scapy() else {
        let why = "python3 with scapy + cryptography not found (apt-get install python3-scapy)";
        if std::env::var("ESPGATE_CI").as_deref() == Ok("1") {
            panic!("ESPGATE_CI=1: {why}");
        }
        eprintln!("SKIP scapy_agrees_both_ways: {why}");
        return;
    };
    let now = Instant::now();
    let shapes = Shape::all();

    // 1. Ours → scapy. With ESN the sequence numbers start past 2^32 so
    //    the high half (in the ICV / AAD only) matters.
    let mut jobs = Vec::new();
    let mut want = Vec::new();
    for shape in &shapes {
        let (mut out, _) = shape.pair(now);
        let esn_hi = if shape.esn {
            out.set_next_seq((1u64 << 32) + 7);
            1
        } else {
            0
        };
        let inner: Vec<Vec<u8>> = SIZES.iter().map(|n| shape.inner(*n, *n as u8)).collect();
        let mut fs = frames(&inner);
        assert_eq!(
            encap_burst(&mut out, &mut fs, now, &mut Vec::new()).good,
            SIZES.len()
        );
        for (f, i) in fs.iter().zip(inner) {
            jobs.push(format!(
                "decrypt {} {}",
                sa_fields(shape, esn_hi),
                hex(f.data())
            ));
            want.push(i);
        }
    }
    let got = run(&py, &jobs);
    for ((line, want), job) in got.iter().zip(&want).zip(&jobs) {
        assert!(
            !line.starts_with("ERR"),
            "scapy could not open our packet: {line}\n{job}"
        );
        assert_eq!(unhex(line), *want, "{job}");
    }

    // 2. Scapy → ours (ESN high half 0: a fresh receiver infers 0).
    let mut jobs = Vec::new();
    let mut want = Vec::new();
    for shape in &shapes {
        for (seq, n) in SIZES.iter().enumerate() {
            let inner = shape.inner(*n, (*n as u8).wrapping_mul(3));
            jobs.push(format!(
                "encrypt {} {} {}",
                sa_fields(shape, 0),
                seq + 1,
                hex(&inner)
            ));
            want.push(inner);
        }
    }
    let got = run(&py, &jobs);
    for (s, shape) in shapes.iter().enumerate() {
        let (_, mut inb) = shape.pair(now);
        let lines = &got[s * SIZES.len()..(s + 1) * SIZES.len()];
        for l in lines {
            assert!(
                !l.starts_with("ERR"),
                "scapy failed to encrypt: {l} ({shape:?})"
            );
        }
        let mut fs = frames(&lines.iter().map(|l| unhex(l)).collect::<Vec<_>>());
        let r = decap_burst(&mut inb, &mut fs, now, &mut Vec::new());
        assert_eq!(r.good, SIZES.len(), "{shape:?}: {:?}", r.dropped);
        for (f, w) in fs.iter().zip(&want[s * SIZES.len()..]) {
            assert_eq!(f.data(), &w[..], "{shape:?}");
        }
    }
    println!(
        "scapy cross-check: {} shapes × {} packets each way",
        shapes.len(),
        SIZES.len()
    );
}

/// tshark (Wireshark's dissectors, also not ours) reads our ESP and
/// ESP-in-UDP packets: SPI and sequence number where it expects them.
#[test]
fn tshark_dissects_our_esp() {
    let has_tshark = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_tshark {
        let why = "tshark not found (apt-get install tshark)";
        if std::env::var("ESPGATE_CI").as_deref() == Ok("1") {
            panic!("ESPGATE_CI=1: {why}");
        }
        eprintln!("SKIP tshark_dissects_our_esp: {why}");
        return;
    }
    let now = Instant::now();
    // pcap, LINKTYPE_RAW (101): each record is a bare IP packet.
    let mut pcap: Vec<u8> = Vec::new();
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    pcap.extend_from_slice(&[0; 8]);
    pcap.extend_from_slice(&65535u32.to_le_bytes());
    pcap.extend_from_slice(&101u32.to_le_bytes());
    let mut n = 0;
    for outer_v6 in [false, true] {
        for udp in [false, true] {
            let shape = Shape {
                outer_v6,
                udp,
                ..Shape::simple(espgate_dataplane::api::Suite::Aes256CbcHmacSha256)
            };
            let (mut out, _) = shape.pair(now);
            out.set_next_seq(1000 + n);
            let mut fs = frames(&[shape.inner(100, 1)]);
            encap_burst(&mut out, &mut fs, now, &mut Vec::new());
            let p = fs[0].data();
            pcap.extend_from_slice(&[0; 8]);
            pcap.extend_from_slice(&(p.len() as u32).to_le_bytes());
            pcap.extend_from_slice(&(p.len() as u32).to_le_bytes());
            pcap.extend_from_slice(p);
            n += 1;
        }
    }
    let path = std::env::temp_dir().join(format!("espgate-esp-{}.pcap", std::process::id()));
    std::fs::write(&path, &pcap).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-o",
            "udp.try_heuristic_first:FALSE",
            "-T",
            "fields",
            "-e",
            "esp.spi",
            "-e",
            "esp.sequence",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        let spi = f[0].trim_start_matches("0x");
        assert_eq!(
            u32::from_str_radix(spi, 16).unwrap_or_else(|_| f[0].parse().unwrap()),
            esp_util::Shape::simple(espgate_dataplane::api::Suite::Aes128Gcm16)
                .inbound_spi()
                .0,
            "{l}"
        );
        assert_eq!(f[1], (1000 + i).to_string(), "{l}");
    }
}
