//! ESP crypto: RFC known-answer vectors (tests/vectors/*.txt), the
//! multi-buffer CBC path against the per-packet `cbc` crate path, SaCipher
//! seal/open round trips and tampering, and cross-checks against
//! implementations we did not write (OpenSSL CLI, python3 `cryptography`).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use aes::cipher::KeyInit;
use espgate_dataplane::api::{Direction, SaKeys, Suite};
use espgate_dataplane::crypto::ctr_vaes::RoundKeys;
use espgate_dataplane::crypto::gcm::Gcm;
use espgate_dataplane::crypto::hmac::HmacKey;
use espgate_dataplane::crypto::{cbc_mb, sha256_x2, OpenJob, SaCipher, SealJob, ESP_HDR_LEN};
use proptest::prelude::*;

// ---------------------------------------------------------------- vectors

/// One record of a vector file: its kind (`[aes-cbc]`) and fields.
struct Vector {
    kind: String,
    name: String,
    f: HashMap<String, Vec<u8>>,
}

impl Vector {
    fn get(&self, k: &str) -> &[u8] {
        self.f
            .get(k)
            .unwrap_or_else(|| panic!("{}: no field {k}", self.name))
    }
}

fn value(v: &str) -> Vec<u8> {
    if let Some(t) = v.strip_prefix("ascii:") {
        t.as_bytes().to_vec()
    } else if let Some(r) = v.strip_prefix("repeat:") {
        let (b, n) = r.split_once('*').expect("repeat:<byte>*<count>");
        vec![hex::decode(b).expect("hex byte")[0]; n.parse().expect("count")]
    } else {
        hex::decode(v).unwrap_or_else(|e| panic!("bad hex {v:?}: {e}"))
    }
}

/// Reads `tests/vectors/<file>`: `[kind]` opens a record, `k = v` adds a
/// field, `#` lines are comments (each file is headed by its RFC section).
fn vectors(file: &str) -> Vec<Vector> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out: Vec<Vector> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(kind) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push(Vector {
                kind: kind.to_string(),
                name: String::new(),
                f: HashMap::new(),
            });
            continue;
        }
        let (k, v) = line.split_once('=').expect("field = value");
        let rec = out.last_mut().expect("field before the first [kind]");
        let (k, v) = (k.trim(), v.trim());
        if k == "name" {
            rec.name = v.to_string();
        } else {
            rec.f.insert(k.to_string(), value(v));
        }
    }
    assert!(!out.is_empty(), "{file} has no vectors");
    out
}

fn cbc_multi_encrypt(key: &[u8], bufs: &mut [Vec<u8>]) {
    // The VAES kernel (when the CPU has it) on a copy, then the aes-crate
    // multi-buffer path on `bufs`: both must give the vector's ciphertext.
    let mut copy = bufs.to_vec();
    if cbc_mb::encrypt_multi_vaes(&RoundKeys::new(key).unwrap(), &mut copy) {
        let mut want = bufs.to_vec();
        cbc_multi_encrypt_crate(key, &mut want);
        assert_eq!(copy, want, "VAES multi-buffer kernel");
    }
    cbc_multi_encrypt_crate(key, bufs);
}

fn cbc_multi_encrypt_crate(key: &[u8], bufs: &mut [Vec<u8>]) {
    match key.len() {
        16 => cbc_mb::encrypt_multi(&aes::Aes128Enc::new_from_slice(key).unwrap(), bufs),
        32 => cbc_mb::encrypt_multi(&aes::Aes256Enc::new_from_slice(key).unwrap(), bufs),
        n => panic!("key length {n}"),
    }
}

fn cbc_decrypt(key: &[u8], iv: &[u8], data: &mut [u8]) {
    let iv: [u8; 16] = iv.try_into().unwrap();
    match key.len() {
        16 => cbc_mb::decrypt(&aes::Aes128Dec::new_from_slice(key).unwrap(), &iv, data),
        32 => cbc_mb::decrypt(&aes::Aes256Dec::new_from_slice(key).unwrap(), &iv, data),
        n => panic!("key length {n}"),
    }
}

#[test]
fn rfc3602_aes_cbc_through_multi_buffer_path() {
    for v in vectors("rfc3602-aes-cbc.txt") {
        assert_eq!(v.kind, "aes-cbc");
        let (key, iv, pt, ct) = (v.get("key"), v.get("iv"), v.get("pt"), v.get("ct"));
        // The vector alone, and in bursts that fill (and overflow) the lanes.
        for copies in [1usize, 3, cbc_mb::LANES, cbc_mb::LANES + 5] {
            let mut bufs: Vec<Vec<u8>> = (0..copies).map(|_| [iv, pt].concat()).collect();
            cbc_multi_encrypt(key, &mut bufs);
            for b in &bufs {
                assert_eq!(&b[16..], ct, "{} x{copies}", v.name);
            }
        }
        let mut d = ct.to_vec();
        cbc_decrypt(key, iv, &mut d);
        assert_eq!(d, pt, "{} decrypt", v.name);
    }
}

fn check_hmac_file(file: &str) {
    for v in vectors(file) {
        let (key, data, want) = (v.get("key"), v.get("data"), v.get("mac"));
        let mut got = vec![0u8; want.len()];
        match v.kind.as_str() {
            "hmac-sha256" => {
                let k = HmacKey::sha256(key);
                k.mac(data, &[], &mut got);
                assert_eq!(got, want, "{}", v.name);
                // The two-stream burst path, paired with a different message.
                let other = b"another message of another length".to_vec();
                let mut got2 = vec![0u8; want.len()];
                let mut scratch = [0u8; 16];
                sha256_x2::mac_burst(
                    &k,
                    [
                        (&other[..], false, 0, &mut scratch[..]),
                        (data, false, 0, &mut got2[..]),
                    ]
                    .into_iter(),
                );
                assert_eq!(got2, want, "{} (two-stream)", v.name);
            }
            "hmac-sha1" => {
                HmacKey::sha1(key).mac(data, &[], &mut got);
                assert_eq!(got, want, "{}", v.name);
            }
            k => panic!("unexpected kind {k}"),
        }
    }
}

#[test]
fn rfc4231_hmac_sha256() {
    check_hmac_file("rfc4231-hmac-sha256.txt");
}

#[test]
fn rfc4868_hmac_sha256_128_truncation() {
    check_hmac_file("rfc4868-hmac-sha256-128.txt");
}

#[test]
fn rfc2202_hmac_sha1_96() {
    check_hmac_file("rfc2202-hmac-sha1.txt");
}

#[test]
fn gcm_spec_vectors() {
    for v in vectors("gcm-spec.txt") {
        assert_eq!(v.kind, "aes-gcm");
        let g = Gcm::new(v.get("key"), v.get("salt").try_into().unwrap()).unwrap();
        let iv: [u8; 8] = v.get("iv").try_into().unwrap();
        let mut data = v.get("pt").to_vec();
        let mut tag = [0u8; 16];
        g.seal(&iv, v.get("aad"), &mut data, &mut tag);
        assert_eq!(data, v.get("ct"), "{}", v.name);
        assert_eq!(&tag[..], v.get("tag"), "{}", v.name);
        assert!(g.open(&iv, v.get("aad"), &mut data, &tag), "{}", v.name);
        assert_eq!(data, v.get("pt"));
    }
}

// ------------------------------------------------- multi-buffer vs cbc crate

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn multi_buffer_cbc_equals_per_packet_cbc(
        blocks in proptest::collection::vec(1usize..=96, 1..=64),
        seed in any::<u8>(),
        wide in any::<bool>(),
    ) {
        let mk = || -> Vec<Vec<u8>> {
            blocks.iter().enumerate()
                .map(|(i, n)| (0..16 * (n + 1)).map(|j| (i * 131 + j * 7) as u8 ^ seed).collect())
                .collect()
        };
        let (mut a, mut b, mut c) = (mk(), mk(), mk());
        let key = vec![seed; if wide { 32 } else { 16 }];
        if wide {
            let k = aes::Aes256Enc::new_from_slice(&key).unwrap();
            cbc_mb::encrypt_multi(&k, &mut a);
            cbc_mb::encrypt_serial(&k, &mut b);
        } else {
            let k = aes::Aes128Enc::new_from_slice(&key).unwrap();
            cbc_mb::encrypt_multi(&k, &mut a);
            cbc_mb::encrypt_serial(&k, &mut b);
        }
        prop_assert_eq!(&a, &b);
        let rk = RoundKeys::new(&key).unwrap();
        if cbc_mb::encrypt_multi_vaes(&rk, &mut c) {
            prop_assert_eq!(&c, &b);
        }
        prop_assert_ne!(a, mk());
    }
}

// ------------------------------------------------------- SaCipher, ESP layer

const SUITES: [Suite; 5] = [
    Suite::Aes256CbcHmacSha256,
    Suite::Aes128CbcHmacSha256,
    Suite::Aes256CbcHmacSha1,
    Suite::Aes128Gcm16,
    Suite::Aes256Gcm16,
];

fn keys(s: Suite, seed: u8) -> SaKeys {
    SaKeys {
        encr: (0..s.encr_keymat_len() as u8)
            .map(|b| b.wrapping_mul(7) ^ seed)
            .collect(),
        integ: (0..s.integ_key_len() as u8)
            .map(|b| b.wrapping_mul(13) ^ seed ^ 0x5a)
            .collect(),
    }
}

/// An unsealed ESP packet: SPI, SEQ, IV space, `pt_len` bytes of padded
/// plaintext (pt_len a multiple of the suite's block), ICV space.
fn packet(s: Suite, spi: u32, seq: u32, pt_len: usize, fill: u8) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&spi.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend(std::iter::repeat_n(0, s.iv_len()));
    p.extend((0..pt_len).map(|i| (i as u8).wrapping_mul(3) ^ fill));
    p.extend(std::iter::repeat_n(0, s.icv_len()));
    p
}

fn pt_range(s: Suite, len: usize) -> std::ops::Range<usize> {
    ESP_HDR_LEN + s.iv_len()..len - s.icv_len()
}

fn seal(sa: &mut SaCipher, pkts: &mut [Vec<u8>], seq_hi: u32, esn: bool) {
    let mut jobs: Vec<SealJob<'_>> = pkts
        .iter_mut()
        .map(|p| SealJob {
            esp: &mut p[..],
            seq_hi,
            esn,
        })
        .collect();
    sa.seal_burst(&mut jobs);
}

fn open(sa: &mut SaCipher, pkts: &mut [Vec<u8>], seq_hi: u32, esn: bool) -> Vec<bool> {
    let mut jobs: Vec<OpenJob<'_>> = pkts
        .iter_mut()
        .map(|p| OpenJob {
            esp: &mut p[..],
            seq_hi,
            esn,
            ok: false,
        })
        .collect();
    sa.open_burst(&mut jobs);
    jobs.iter().map(|j| j.ok).collect()
}

#[test]
fn seal_open_round_trip_every_suite_and_burst_size() {
    for s in SUITES {
        let mut tx = SaCipher::new(s, Direction::Outbound, &keys(s, 1)).unwrap();
        let mut rx = SaCipher::new(s, Direction::Inbound, &keys(s, 1)).unwrap();
        assert_eq!((tx.suite(), tx.dir()), (s, Direction::Outbound));
        assert_eq!((rx.suite(), rx.dir()), (s, Direction::Inbound));
        for burst in [1usize, 2, 7, 32, 64, 70] {
            for esn in [false, true] {
                let orig: Vec<Vec<u8>> = (0..burst)
                    .map(|i| {
                        let len = s.block_len() * (1 + (i * 37) % 90);
                        packet(s, 0x1000_0100, i as u32 + 1, len, i as u8)
                    })
                    .collect();
                let mut pkts = orig.clone();
                seal(&mut tx, &mut pkts, 5, esn);
                for (p, o) in pkts.iter().zip(&orig) {
                    let r = pt_range(s, p.len());
                    assert_eq!(p[..8], o[..8], "{s:?}: header untouched");
                    assert_ne!(p[r.clone()], o[r], "{s:?}: encrypted");
                }
                let oks = open(&mut rx, &mut pkts, 5, esn);
                assert!(oks.iter().all(|&k| k), "{s:?} burst {burst} esn {esn}");
                for (p, o) in pkts.iter().zip(&orig) {
                    let r = pt_range(s, p.len());
                    assert_eq!(p[r.clone()], o[r], "{s:?}: decrypted");
                }
            }
        }
    }
}

#[test]
fn tampered_packets_fail_and_stay_encrypted() {
    for s in SUITES {
        let mut sa = SaCipher::new(s, Direction::Outbound, &keys(s, 2)).unwrap();
        let mut rx = SaCipher::new(s, Direction::Inbound, &keys(s, 2)).unwrap();
        let orig = packet(s, 0x2000_0001, 9, 4 * s.block_len(), 0x33);
        let mut sealed = vec![orig.clone()];
        seal(&mut sa, &mut sealed, 0, false);
        let sealed = sealed.remove(0);
        let len = sealed.len();
        // Flip a bit in: SPI, SEQ, IV, ciphertext, ICV.
        for pos in [0, 5, ESP_HDR_LEN, ESP_HDR_LEN + s.iv_len() + 3, len - 1] {
            let mut p = vec![sealed.clone()];
            p[0][pos] ^= 0x01;
            assert_eq!(open(&mut rx, &mut p, 0, false), [false], "{s:?} pos {pos}");
            let mut want = sealed.clone();
            want[pos] ^= 0x01;
            assert_eq!(p[0], want, "{s:?}: nothing decrypted on a bad ICV");
        }
        // A different key fails too.
        let mut other = SaCipher::new(s, Direction::Inbound, &keys(s, 3)).unwrap();
        let mut p = vec![sealed.clone()];
        assert_eq!(open(&mut other, &mut p, 0, false), [false]);
        // ESN: the high half is authenticated even though it is not sent.
        let mut p = vec![orig.clone()];
        seal(&mut sa, &mut p, 7, true);
        let mut q = p.clone();
        assert_eq!(
            open(&mut rx, &mut q, 8, true),
            [false],
            "{s:?} wrong seq_hi"
        );
        assert_eq!(open(&mut rx, &mut p, 7, true), [true], "{s:?} right seq_hi");
    }
}

#[test]
fn malformed_lengths_never_panic() {
    for s in SUITES {
        let mut sa = SaCipher::new(s, Direction::Outbound, &keys(s, 4)).unwrap();
        let mut rx = SaCipher::new(s, Direction::Inbound, &keys(s, 4)).unwrap();
        let min = ESP_HDR_LEN + s.iv_len() + s.block_len() + s.icv_len();
        for len in 0..min + 40 {
            let mut p = vec![vec![0xabu8; len]];
            let before = p.clone();
            let ok = open(&mut rx, &mut p, 0, true)[0];
            assert!(!ok, "{s:?} len {len}: garbage never verifies");
            assert_eq!(p, before, "{s:?} len {len}: untouched");
            seal(&mut sa, &mut p, 0, true);
            let fits = len >= min && (len - min).is_multiple_of(s.block_len());
            if !fits {
                assert_eq!(p, before, "{s:?} len {len}: malformed seal job skipped");
            }
        }
    }
}

#[test]
fn cbc_ivs_are_fresh_and_gcm_ivs_are_the_sequence_number() {
    for s in SUITES {
        let mut sa = SaCipher::new(s, Direction::Outbound, &keys(s, 5)).unwrap();
        let mut pkts: Vec<Vec<u8>> = (0..40)
            .map(|i| packet(s, 0x3000_0001, 100 + i, 2 * s.block_len(), 0))
            .collect();
        seal(&mut sa, &mut pkts, 2, true);
        let mut second = pkts.clone();
        seal(&mut sa, &mut second, 2, true);
        let ivs: std::collections::HashSet<Vec<u8>> = pkts
            .iter()
            .chain(second.iter())
            .map(|p| p[ESP_HDR_LEN..ESP_HDR_LEN + s.iv_len()].to_vec())
            .collect();
        if s.is_aead() {
            for (i, p) in pkts.iter().enumerate() {
                let want = ((2u64 << 32) | (100 + i as u64)).to_be_bytes();
                assert_eq!(p[8..16], want, "{s:?}: explicit IV = 64-bit seq");
            }
        } else {
            assert_eq!(ivs.len(), 80, "{s:?}: every CBC IV differs");
        }
    }
}

#[test]
fn bad_key_lengths_are_errors() {
    for s in SUITES {
        let mut k = keys(s, 6);
        k.encr.push(0);
        let e = SaCipher::new(s, Direction::Inbound, &k).unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
        let mut k = keys(s, 6);
        k.integ.push(0);
        assert!(SaCipher::new(s, Direction::Outbound, &k).is_err());
    }
    let dbg = format!(
        "{:?}",
        SaCipher::new(SUITES[0], Direction::Outbound, &keys(SUITES[0], 6)).unwrap()
    );
    assert!(!dbg.contains("encr") && dbg.contains("hidden"), "{dbg}");
}

// ------------------------------------------- independent implementations

/// Whether `tool` runs; if not, skip (print why) or fail under ESPGATE_CI=1.
fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let msg = format!("`{tool} {}` does not run", probe.join(" "));
        if std::env::var("ESPGATE_CI").as_deref() == Ok("1") {
            panic!("{msg} (ESPGATE_CI=1: install it, see scripts/install-deps.sh)");
        }
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

fn run(cmd: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl_hmac(digest: &str, key: &[u8], data: &[u8]) -> Vec<u8> {
    let out = run(
        "openssl",
        &[
            "dgst",
            &format!("-{digest}"),
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{}", hex::encode(key)),
        ],
        data,
    );
    let text = String::from_utf8(out).unwrap();
    hex::decode(text.split_whitespace().last().unwrap()).unwrap()
}

fn openssl_cbc(encrypt: bool, key: &[u8], iv: &[u8], data: &[u8]) -> Vec<u8> {
    let cipher = format!("-aes-{}-cbc", key.len() * 8);
    let (k, i) = (hex::encode(key), hex::encode(iv));
    let dir = if encrypt { "-e" } else { "-d" };
    run(
        "openssl",
        &["enc", dir, &cipher, "-K", &k, "-iv", &i, "-nopad"],
        data,
    )
}

#[test]
fn cbc_hmac_cross_check_with_openssl() {
    if !have("openssl", &["version"]) {
        return;
    }
    for s in [
        Suite::Aes256CbcHmacSha256,
        Suite::Aes128CbcHmacSha256,
        Suite::Aes256CbcHmacSha1,
    ] {
        let k = keys(s, 7);
        let digest = if s == Suite::Aes256CbcHmacSha1 {
            "sha1"
        } else {
            "sha256"
        };
        let mut sa = SaCipher::new(s, Direction::Outbound, &k).unwrap();
        let mut rx = SaCipher::new(s, Direction::Inbound, &k).unwrap();
        for (esn, pt_len) in [(false, 16), (true, 1408 + 16), (false, 96)] {
            // Ours → OpenSSL.
            let orig = packet(s, 0x4000_0001, 77, pt_len, 0x5c);
            let mut p = vec![orig.clone()];
            seal(&mut sa, &mut p, 3, esn);
            let p = &p[0];
            let ct_at = ESP_HDR_LEN + s.iv_len();
            let icv_at = p.len() - s.icv_len();
            let pt = openssl_cbc(false, &k.encr, &p[ESP_HDR_LEN..ct_at], &p[ct_at..icv_at]);
            assert_eq!(pt, orig[ct_at..icv_at], "{s:?}: openssl decrypts ours");
            let mut hashed = p[..icv_at].to_vec();
            if esn {
                hashed.extend_from_slice(&3u32.to_be_bytes());
            }
            let mac = openssl_hmac(digest, &k.integ, &hashed);
            assert_eq!(p[icv_at..], mac[..s.icv_len()], "{s:?}: openssl ICV");

            // OpenSSL → ours.
            let iv: Vec<u8> = (0..16).map(|i| i * 11).collect();
            let ct = openssl_cbc(true, &k.encr, &iv, &orig[ct_at..icv_at]);
            let mut q = orig[..ESP_HDR_LEN].to_vec();
            q.extend_from_slice(&iv);
            q.extend_from_slice(&ct);
            let mut hashed = q.clone();
            if esn {
                hashed.extend_from_slice(&3u32.to_be_bytes());
            }
            let mac = openssl_hmac(digest, &k.integ, &hashed);
            q.extend_from_slice(&mac[..s.icv_len()]);
            let mut q = vec![q];
            assert_eq!(
                open(&mut rx, &mut q, 3, esn),
                [true],
                "{s:?}: opens openssl's"
            );
            assert_eq!(q[0][ct_at..icv_at], orig[ct_at..icv_at]);
        }
    }
}

/// python3 `cryptography` AESGCM: `mode` "seal" or "open"; key, nonce, aad,
/// data in hex on argv; result hex on stdout.
const PY_GCM: &str = r#"
import sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
mode, key, nonce, aad, data = sys.argv[1], *[bytes.fromhex(a) for a in sys.argv[2:6]]
g = AESGCM(key)
out = g.encrypt(nonce, data, aad) if mode == "seal" else g.decrypt(nonce, data, aad)
print(out.hex())
"#;

#[test]
fn gcm_cross_check_with_python_cryptography() {
    if !have(
        "python3",
        &["-c", "import cryptography.hazmat.primitives.ciphers.aead"],
    ) {
        return;
    }
    let py = |mode: &str, key: &[u8], nonce: &[u8], aad: &[u8], data: &[u8]| -> Vec<u8> {
        let out = run(
            "python3",
            &[
                "-c",
                PY_GCM,
                mode,
                &hex::encode(key),
                &hex::encode(nonce),
                &hex::encode(aad),
                &hex::encode(data),
            ],
            b"",
        );
        hex::decode(String::from_utf8(out).unwrap().trim()).unwrap()
    };
    for s in [Suite::Aes128Gcm16, Suite::Aes256Gcm16] {
        let k = keys(s, 8);
        let (key, salt) = k.encr.split_at(s.cipher_key_len());
        let mut sa = SaCipher::new(s, Direction::Outbound, &k).unwrap();
        let mut rx = SaCipher::new(s, Direction::Inbound, &k).unwrap();
        for (esn, pt_len) in [(false, 4), (true, 1412), (true, 64)] {
            let orig = packet(s, 0x5000_0001, 1234, pt_len, 0x77);
            let mut aad = orig[..4].to_vec();
            if esn {
                aad.extend_from_slice(&9u32.to_be_bytes());
            }
            aad.extend_from_slice(&orig[4..8]);
            let ct_at = ESP_HDR_LEN + 8;
            let icv_at = orig.len() - 16;

            // Ours → python.
            let mut p = vec![orig.clone()];
            seal(&mut sa, &mut p, 9, esn);
            let p = &p[0];
            let nonce = [salt, &p[8..16]].concat();
            let pt = py("open", key, &nonce, &aad, &p[ct_at..]);
            assert_eq!(pt, orig[ct_at..icv_at], "{s:?}: python opens ours");

            // Python → ours.
            let explicit = [0xa0u8, 1, 2, 3, 4, 5, 6, 7];
            let nonce = [salt, &explicit].concat();
            let sealed = py("seal", key, &nonce, &aad, &orig[ct_at..icv_at]);
            let mut q = orig[..8].to_vec();
            q.extend_from_slice(&explicit);
            q.extend_from_slice(&sealed);
            let mut q = vec![q];
            assert_eq!(
                open(&mut rx, &mut q, 9, esn),
                [true],
                "{s:?}: opens python's"
            );
            assert_eq!(q[0][ct_at..icv_at], orig[ct_at..icv_at]);
        }
    }
}
