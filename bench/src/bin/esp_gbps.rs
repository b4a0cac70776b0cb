//! Seal (and open) throughput per suite, in Gbps of ESP payload, for
//! `scripts/bench-report.sh`. One thread; pin it with `taskset`.
//!
//! Output, one line per cell (machine-readable, `key=value`):
//! `esp_gbps op=seal suite=aes-256-cbc-hmac-sha256 size=1408 burst=32 gbps=12.345`
//!
//! Args: `[--secs S] [--runs N] [--sizes 64,512,1408] [--quick] [--only op/suite-substring]`.
//! The measuring loop, [`measure`], takes any closure that processes one
//! burst, so the same harness serves full ESP encap once it lands.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes::cipher::KeyInit;
use espgate_dataplane::api::{Direction, SaKeys, Suite};
use espgate_dataplane::crypto::{cbc_mb, OpenJob, SaCipher, SealJob, ESP_HDR_LEN};

const BURST: usize = 32;

/// CPU time of the calling thread. Like `openssl speed` (which counts
/// process user time unless given `-elapsed`), so that other processes on a
/// shared core slow neither side's number.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `burst` (which handles `bytes_per_burst` payload bytes) for at
/// least `secs` of thread CPU time per run, `runs` times; returns the best
/// Gbps.
pub fn measure(bytes_per_burst: usize, secs: f64, runs: usize, mut burst: impl FnMut()) -> f64 {
    let min = Duration::from_secs_f64(secs);
    // Warm up caches, branch predictors and clocks.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        burst();
    }
    let mut best = 0f64;
    for _ in 0..runs {
        let start = thread_cpu_time();
        let wall = Instant::now();
        let mut n = 0u64;
        let mut el;
        loop {
            for _ in 0..16 {
                burst();
            }
            n += 16;
            el = thread_cpu_time().saturating_sub(start);
            // The wall-clock cap bounds the loop if the CPU clock is broken.
            if el >= min || wall.elapsed() > 20 * min {
                break;
            }
        }
        if el.is_zero() {
            el = wall.elapsed();
        }
        let gbps = (n as f64 * bytes_per_burst as f64 * 8.0) / el.as_secs_f64() / 1e9;
        best = best.max(gbps);
    }
    best
}

pub fn suite_name(s: Suite) -> &'static str {
    match s {
        Suite::Aes256CbcHmacSha256 => "aes-256-cbc-hmac-sha256",
        Suite::Aes128CbcHmacSha256 => "aes-128-cbc-hmac-sha256",
        Suite::Aes256CbcHmacSha1 => "aes-256-cbc-hmac-sha1",
        Suite::Aes128Gcm16 => "aes-128-gcm",
        Suite::Aes256Gcm16 => "aes-256-gcm",
    }
}

pub fn keys(s: Suite) -> SaKeys {
    SaKeys {
        encr: (0..s.encr_keymat_len() as u8).collect(),
        integ: (0..s.integ_key_len() as u8).map(|b| b ^ 0xa5).collect(),
    }
}

/// ESP packet length for `payload` bytes (RFC 4303 padding, 2 trailer bytes).
pub fn esp_len(s: Suite, payload: usize) -> usize {
    let ct = (payload + 2).div_ceil(s.block_len()) * s.block_len();
    ESP_HDR_LEN + s.iv_len() + ct + s.icv_len()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut secs = 1.0;
    let mut runs = 3;
    let mut sizes = vec![64usize, 512, 1408];
    // Substring of "op/suite" selecting the cells to run ("" = all).
    let mut only = String::new();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--secs" => {
                secs = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(secs);
                i += 1;
            }
            "--runs" => {
                runs = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(runs);
                i += 1;
            }
            "--sizes" => {
                if let Some(v) = args.get(i + 1) {
                    sizes = v.split(',').filter_map(|x| x.parse().ok()).collect();
                }
                i += 1;
            }
            "--quick" => {
                secs = 0.3;
                runs = 1;
            }
            "--only" => {
                only = args.get(i + 1).cloned().unwrap_or_default();
                i += 1;
            }
            other => eprintln!("esp_gbps: ignoring argument {other}"),
        }
        i += 1;
    }
    println!(
        "esp_gbps info aes_hw={} sha_ni_x2={} burst={BURST}",
        aes::hardware_accelerated(),
        espgate_dataplane::crypto::sha256_x2::has_shani()
    );
    let suites = [
        Suite::Aes256CbcHmacSha256,
        Suite::Aes128CbcHmacSha256,
        Suite::Aes256CbcHmacSha1,
        Suite::Aes128Gcm16,
        Suite::Aes256Gcm16,
    ];
    let want = |op: &str, suite: &str| format!("{op}/{suite}").contains(&only);
    for &size in &sizes {
        for &suite in &suites {
            if !want("seal", suite_name(suite)) {
                continue;
            }
            let seal = seal_gbps(suite, size, secs, runs);
            println!(
                "esp_gbps op=seal suite={} size={size} burst={BURST} gbps={seal:.3}",
                suite_name(suite)
            );
        }
        for suite in [Suite::Aes256CbcHmacSha256, Suite::Aes256Gcm16] {
            if !want("encap", suite_name(suite)) {
                continue;
            }
            let encap = encap_gbps(suite, size, secs, runs);
            println!(
                "esp_gbps op=encap suite={} size={size} burst={BURST} gbps={encap:.3}",
                suite_name(suite)
            );
        }
        for suite in [Suite::Aes256CbcHmacSha256, Suite::Aes256Gcm16] {
            if !want("open", suite_name(suite)) {
                continue;
            }
            let open = open_gbps(suite, size, secs, runs);
            println!(
                "esp_gbps op=open suite={} size={size} burst={BURST} gbps={open:.3}",
                suite_name(suite)
            );
        }
        // Raw AES-256-CBC encryption: multi-buffer vs per-packet `cbc` crate.
        let aes = aes::Aes256Enc::new(&[7u8; 32].into());
        let blocks = (size + 2).div_ceil(16);
        let mut bufs: Vec<Vec<u8>> = (0..BURST).map(|_| vec![0x42; 16 + 16 * blocks]).collect();
        if want("cbc-multi", "aes-256-cbc") {
            let mb = measure(size * BURST, secs, runs, || {
                cbc_mb::encrypt_multi(&aes, &mut bufs);
                black_box(&bufs);
            });
            println!(
                "esp_gbps op=cbc-multi suite=aes-256-cbc size={size} burst={BURST} gbps={mb:.3}"
            );
        }
        let rk = espgate_dataplane::crypto::ctr_vaes::RoundKeys::new(&[7u8; 32]);
        if let (true, Some(rk)) = (want("cbc-multi-vaes", "aes-256-cbc"), rk) {
            if espgate_dataplane::crypto::ctr_vaes::available() {
                let mb = measure(size * BURST, secs, runs, || {
                    cbc_mb::encrypt_multi_vaes(&rk, &mut bufs);
                    black_box(&bufs);
                });
                println!(
                    "esp_gbps op=cbc-multi-vaes suite=aes-256-cbc size={size} burst={BURST} gbps={mb:.3}"
                );
            }
        }
        if want("cbc-serial", "aes-256-cbc") {
            let serial = measure(size * BURST, secs, runs, || {
                cbc_mb::encrypt_serial(&aes, &mut bufs);
                black_box(&bufs);
            });
            println!(
                "esp_gbps op=cbc-serial suite=aes-256-cbc size={size} burst={BURST} gbps={serial:.3}"
            );
        }
    }
}

/// Full RFC 4303 tunnel-mode encapsulation (`esp::encap_burst`: trailer,
/// sequence numbers, seal, outer IPv4 header) of `size`-byte inner IPv4
/// packets, 32 per burst. Each round first copies the inner packets back
/// into their frames, as a receive would.
fn encap_gbps(suite: Suite, size: usize, secs: f64, runs: usize) -> f64 {
    use espgate_dataplane::api::{
        Direction, Lifetime, RuleId, SaParams, Selector, Spi, TunnelEnds,
    };
    use espgate_dataplane::buf::Frame;
    use espgate_dataplane::esp::encap_burst;
    use espgate_dataplane::sa::Sa;
    let params = SaParams {
        spi: Spi(0x1000_0001),
        dir: Direction::Outbound,
        suite,
        keys: keys(suite),
        tunnel: TunnelEnds {
            local: [10, 255, 1, 2].into(),
            remote: [10, 255, 2, 2].into(),
            udp_encap: None,
        },
        selector: Selector::between(
            "192.168.100.0/24".parse().unwrap_or_default(),
            "172.16.10.0/24".parse().unwrap_or_default(),
        ),
        esn: true,
        replay_window: 0,
        lifetime: Lifetime::UNLIMITED,
        rule: RuleId(0),
        child_id: 1,
        resource: None,
        more_selectors: Vec::new(),
    };
    let Ok(mut sa) = Sa::new(params, Instant::now()) else {
        return 0.0;
    };
    // An IPv4/UDP inner packet of exactly `size` bytes.
    let size = size.max(28);
    let mut inner = vec![0u8; size];
    inner[0] = 0x45;
    inner[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    inner[8] = 64;
    inner[9] = 17;
    inner[12..16].copy_from_slice(&[192, 168, 100, 10]);
    inner[16..20].copy_from_slice(&[172, 16, 10, 11]);
    let sum: u32 = inner[..20]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    inner[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut frames: Vec<Frame> = (0..BURST).map(|_| Frame::new()).collect();
    let mut events: Vec<espgate_dataplane::api::DataplaneEvent> = Vec::new();
    let now = Instant::now();
    measure(size * BURST, secs, runs, || {
        for f in frames.iter_mut() {
            f.set_data(&inner);
        }
        let r = encap_burst(&mut sa, &mut frames, now, &mut events);
        debug_assert_eq!(r.good, BURST);
        black_box(&frames);
    })
}

fn seal_gbps(suite: Suite, size: usize, secs: f64, runs: usize) -> f64 {
    let Ok(mut sa) = SaCipher::new(suite, Direction::Outbound, &keys(suite)) else {
        return 0.0;
    };
    let len = esp_len(suite, size);
    let mut bufs: Vec<Vec<u8>> = (0..BURST).map(|_| vec![0x17; len]).collect();
    let mut seq = 1u32;
    measure(size * BURST, secs, runs, || {
        let mut it = bufs.iter_mut();
        let mut jobs: [SealJob<'_>; BURST] = core::array::from_fn(|_| {
            let b = it.next().map(|b| &mut b[..]).unwrap_or_default();
            if b.len() >= 8 {
                b[4..8].copy_from_slice(&seq.to_be_bytes());
            }
            seq = seq.wrapping_add(1);
            SealJob {
                esp: b,
                seq_hi: 0,
                esn: true,
            }
        });
        sa.seal_burst(&mut jobs);
        black_box(&jobs);
    })
}

fn open_gbps(suite: Suite, size: usize, secs: f64, runs: usize) -> f64 {
    let (Ok(mut tx), Ok(mut sa)) = (
        SaCipher::new(suite, Direction::Outbound, &keys(suite)),
        SaCipher::new(suite, Direction::Inbound, &keys(suite)),
    ) else {
        return 0.0;
    };
    let len = esp_len(suite, size);
    let mut sealed: Vec<Vec<u8>> = (0..BURST).map(|_| vec![0x17; len]).collect();
    {
        let mut jobs: Vec<SealJob<'_>> = sealed
            .iter_mut()
            .map(|b| SealJob {
                esp: &mut b[..],
                seq_hi: 0,
                esn: false,
            })
            .collect();
        tx.seal_burst(&mut jobs);
    }
    let mut bufs = sealed.clone();
    measure(size * BURST, secs, runs, || {
        // Restore the ciphertext so every round verifies and decrypts.
        for (b, s) in bufs.iter_mut().zip(sealed.iter()) {
            b.copy_from_slice(s);
        }
        let mut it = bufs.iter_mut();
        let mut jobs: [OpenJob<'_>; BURST] = core::array::from_fn(|_| OpenJob {
            esp: it.next().map(|b| &mut b[..]).unwrap_or_default(),
            seq_hi: 0,
            esn: false,
            ok: false,
        });
        sa.open_burst(&mut jobs);
        debug_assert!(jobs.iter().all(|j| j.ok));
        black_box(&jobs);
    })
}
