//! Seal/open per suite at 64, 512 and 1408-byte payloads, single packets and
//! bursts of 32; and raw AES-256-CBC encryption: multi-buffer through the
//! `aes` crate, multi-buffer through our VAES kernel, and the per-packet
//! `cbc` crate path. Throughput is in payload bytes.
//!
//! `cargo bench -p espgate-bench --bench crypto`

use std::hint::black_box;

use aes::cipher::KeyInit;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use espgate_dataplane::api::{Direction, SaKeys, Suite};
use espgate_dataplane::crypto::{cbc_mb, ctr_vaes, OpenJob, SaCipher, SealJob, ESP_HDR_LEN};

const SIZES: [usize; 3] = [64, 512, 1408];
const SUITES: [(Suite, &str); 5] = [
    (Suite::Aes256CbcHmacSha256, "aes256cbc-sha256"),
    (Suite::Aes128CbcHmacSha256, "aes128cbc-sha256"),
    (Suite::Aes256CbcHmacSha1, "aes256cbc-sha1"),
    (Suite::Aes128Gcm16, "aes128gcm"),
    (Suite::Aes256Gcm16, "aes256gcm"),
];

fn keys(s: Suite) -> SaKeys {
    SaKeys {
        encr: (0..s.encr_keymat_len() as u8).collect(),
        integ: (0..s.integ_key_len() as u8).map(|b| b ^ 0x5a).collect(),
    }
}

fn esp_len(s: Suite, payload: usize) -> usize {
    let ct = (payload + 2).div_ceil(s.block_len()) * s.block_len();
    ESP_HDR_LEN + s.iv_len() + ct + s.icv_len()
}

fn seal_jobs(bufs: &mut [Vec<u8>]) -> Vec<SealJob<'_>> {
    bufs.iter_mut()
        .map(|b| SealJob {
            esp: &mut b[..],
            seq_hi: 0,
            esn: false,
        })
        .collect()
}

fn seal_open(c: &mut Criterion) {
    for (suite, name) in SUITES {
        let mut g = c.benchmark_group(format!("seal/{name}"));
        for size in SIZES {
            for burst in [1usize, 32] {
                let mut sa = SaCipher::new(suite, Direction::Outbound, &keys(suite))
                    .expect("bench keys fit");
                let mut bufs: Vec<Vec<u8>> = (0..burst)
                    .map(|_| vec![0x17; esp_len(suite, size)])
                    .collect();
                g.throughput(Throughput::Bytes((size * burst) as u64));
                g.bench_function(BenchmarkId::new(format!("burst{burst}"), size), |b| {
                    b.iter(|| {
                        let mut jobs = seal_jobs(&mut bufs);
                        sa.seal_burst(&mut jobs);
                        black_box(&jobs);
                    })
                });
            }
        }
        g.finish();

        let mut g = c.benchmark_group(format!("open/{name}"));
        for size in SIZES {
            for burst in [1usize, 32] {
                let mut tx = SaCipher::new(suite, Direction::Outbound, &keys(suite))
                    .expect("bench keys fit");
                let mut sa =
                    SaCipher::new(suite, Direction::Inbound, &keys(suite)).expect("bench keys fit");
                let mut sealed: Vec<Vec<u8>> = (0..burst)
                    .map(|_| vec![0x17; esp_len(suite, size)])
                    .collect();
                tx.seal_burst(&mut seal_jobs(&mut sealed));
                let mut bufs = sealed.clone();
                g.throughput(Throughput::Bytes((size * burst) as u64));
                g.bench_function(BenchmarkId::new(format!("burst{burst}"), size), |b| {
                    b.iter(|| {
                        // Fresh ciphertext each round (includes this copy).
                        for (d, s) in bufs.iter_mut().zip(sealed.iter()) {
                            d.copy_from_slice(s);
                        }
                        let mut jobs: Vec<OpenJob<'_>> = bufs
                            .iter_mut()
                            .map(|b| OpenJob {
                                esp: &mut b[..],
                                seq_hi: 0,
                                esn: false,
                                ok: false,
                            })
                            .collect();
                        sa.open_burst(&mut jobs);
                        assert!(jobs.iter().all(|j| j.ok));
                    })
                });
            }
        }
        g.finish();
    }
}

fn cbc_paths(c: &mut Criterion) {
    let aes = aes::Aes256Enc::new(&[7u8; 32].into());
    let mut g = c.benchmark_group("aes256cbc-encrypt");
    for size in SIZES {
        for burst in [1usize, 32] {
            let blocks = (size + 2).div_ceil(16);
            let mut bufs: Vec<Vec<u8>> = (0..burst).map(|_| vec![0x42; 16 + 16 * blocks]).collect();
            g.throughput(Throughput::Bytes((size * burst) as u64));
            g.bench_function(BenchmarkId::new(format!("multi/burst{burst}"), size), |b| {
                b.iter(|| cbc_mb::encrypt_multi(&aes, black_box(&mut bufs)))
            });
            if let (true, Some(rk)) = (ctr_vaes::available(), ctr_vaes::RoundKeys::new(&[7u8; 32]))
            {
                g.bench_function(
                    BenchmarkId::new(format!("multi-vaes/burst{burst}"), size),
                    |b| b.iter(|| cbc_mb::encrypt_multi_vaes(&rk, black_box(&mut bufs))),
                );
            }
            g.bench_function(
                BenchmarkId::new(format!("serial/burst{burst}"), size),
                |b| b.iter(|| cbc_mb::encrypt_serial(&aes, black_box(&mut bufs))),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, seal_open, cbc_paths);
criterion_main!(benches);
