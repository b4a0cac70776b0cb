//! In-memory links: order, conservation of frames, faults, hosts, threads.

use espgate_dataplane::buf::{Burst, Pool, PortId};
use espgate_dataplane::io::mem::{Faults, MemHost, MemLink};
use espgate_dataplane::io::PacketIo;

#[test]
fn host_to_port_and_back() {
    let (host_end, port_end) = MemLink::pair(64);
    let mut host = MemHost::new(host_end, 64);
    let mut port = port_end.with_port(PortId(2));
    let mut pool = Pool::new(128);
    for i in 0..10u8 {
        assert!(host.send(&[0x45, i, 0, 0]));
    }
    let mut b = Burst::new();
    assert_eq!(port.rx_burst(&mut pool, &mut b).unwrap(), 10);
    assert!(b.frames().iter().all(|f| f.port == PortId(2)));
    let seen: Vec<u8> = b.frames().iter().map(|f| f.data()[1]).collect();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    // Echo everything back: the host receives it in order.
    assert_eq!(port.tx_burst(&mut pool, &mut b).unwrap(), 10);
    assert_eq!(pool.available(), 128);
    let back = host.recv_all();
    assert_eq!(back.len(), 10);
    assert!(back.iter().enumerate().all(|(i, p)| p[1] == i as u8));
    assert_eq!(host.recv_vec(), None);
    let mut small = [0u8; 2];
    assert!(host.send(&[9, 8, 7]));
    port.rx_burst(&mut pool, &mut b).unwrap();
    port.tx_burst(&mut pool, &mut b).unwrap();
    assert_eq!(host.recv_into(&mut small), Some(2), "cut to the buffer");
    assert_eq!(small, [9, 8]);
}

#[test]
fn drop_every_nth_and_reorder() {
    let (a, b) = MemLink::pair(64);
    let mut tx = MemHost::new(a, 64);
    let mut rx = MemHost::new(b, 64);
    tx.port_mut().set_faults(Faults {
        drop_every: Some(3),
        reorder_every: None,
    });
    for i in 1..=9u8 {
        tx.send(&[i]);
    }
    let got: Vec<u8> = rx.recv_all().into_iter().map(|p| p[0]).collect();
    assert_eq!(got, vec![1, 2, 4, 5, 7, 8]);
    let stats = tx.port_mut().stats_handle();
    assert_eq!(stats.faults_dropped(), 3);
    assert_eq!(stats.get().tx_dropped, 3);

    let (a, b) = MemLink::pair(64);
    let mut tx = MemHost::new(a, 64);
    let mut rx = MemHost::new(b, 64);
    tx.port_mut().set_faults(Faults {
        drop_every: None,
        reorder_every: Some(2),
    });
    for i in 1..=6u8 {
        tx.send(&[i]);
    }
    let got: Vec<u8> = rx.recv_all().into_iter().map(|p| p[0]).collect();
    assert_eq!(got, vec![1, 3, 2, 5, 4], "6 is held back");
    let mut pool = Pool::new(4);
    assert!(tx.port_mut().flush(&mut pool));
    assert_eq!(rx.recv_vec(), Some(vec![6]));
}

#[test]
fn frames_are_conserved_across_threads() {
    // A worker-like thread echoes everything; pools never grow or shrink.
    let (host_end, port_end) = MemLink::pair(32);
    let worker = std::thread::spawn(move || {
        let mut port = port_end;
        let mut pool = Pool::new(64);
        let mut b = Burst::new();
        let mut echoed = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for _ in 0..50_000_000u64 {
            if std::time::Instant::now() > deadline {
                break;
            }
            port.rx_burst(&mut pool, &mut b).unwrap();
            echoed += port.tx_burst(&mut pool, &mut b).unwrap();
            if echoed == 1000 {
                break;
            }
            std::thread::yield_now();
        }
        (echoed, pool.available(), pool.capacity())
    });
    let mut host = MemHost::new(host_end, 64);
    let mut received = 0usize;
    let mut sent = 0u32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for _ in 0..50_000_000u64 {
        if std::time::Instant::now() > deadline {
            break;
        }
        if sent < 1000 && host.send(&sent.to_be_bytes()) {
            sent += 1;
        }
        while let Some(p) = host.recv_vec() {
            assert_eq!(p, (received as u32).to_be_bytes(), "in order");
            received += 1;
        }
        if received == 1000 {
            break;
        }
        std::thread::yield_now();
    }
    let (echoed, avail, cap) = worker.join().unwrap();
    assert_eq!(echoed, 1000);
    assert_eq!(received, 1000);
    assert_eq!(avail, cap, "worker pool back to full size");
}

#[test]
fn empty_pool_leaves_packets_in_the_ring() {
    let (a, mut b) = MemLink::pair(8);
    let mut host = MemHost::new(a, 64);
    host.send(&[1]);
    let mut empty = Pool::new(0);
    let mut burst = Burst::new();
    assert_eq!(b.rx_burst(&mut empty, &mut burst).unwrap(), 0);
    assert_eq!(b.pending(), 1);
    let mut pool = Pool::new(4);
    assert_eq!(b.rx_burst(&mut pool, &mut burst).unwrap(), 1);
}

/// Prints the rate of a mem link between two threads (no assertion on
/// time). `cargo test --release -p espgate-dataplane --test io_mem -- --ignored --nocapture`
#[test]
#[ignore]
fn report_mem_link_rate() {
    let (mut a, mut b) = MemLink::pair(1024);
    let total = 2_000_000u64;
    let rx = std::thread::spawn(move || {
        let mut pool = Pool::new(1024);
        let mut burst = Burst::new();
        let mut got = 0u64;
        let start = std::time::Instant::now();
        while got < total && start.elapsed() < std::time::Duration::from_secs(30) {
            got += b.rx_burst(&mut pool, &mut burst).unwrap() as u64;
            burst.free_all(&mut pool);
        }
        got
    });
    let mut pool = Pool::new(1024);
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while sent < total && start.elapsed() < std::time::Duration::from_secs(30) {
        let mut burst = Burst::new();
        let room = a.tx_room().min(64);
        if room == 0 {
            std::thread::yield_now();
            continue;
        }
        while burst.len() < room {
            let mut f = pool.get().unwrap();
            f.set_data(&[0u8; 64]);
            burst.push(f).unwrap();
        }
        sent += a.tx_burst(&mut pool, &mut burst).unwrap() as u64;
    }
    let got = rx.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "mem link: {got} packets in {secs:.2}s = {:.1} Mpps (tx dropped when ring full: {})",
        got as f64 / secs / 1e6,
        a.stats().tx_dropped
    );
}

/// One thread sends and receives: the link's own cost per packet, without
/// cross-core effects (prints only).
#[test]
#[ignore]
fn report_mem_link_rate_one_thread() {
    let (mut a, mut b) = MemLink::pair(256);
    let mut pa = Pool::new(256);
    let mut pb = Pool::new(256);
    let total = 20_000_000u64;
    let start = std::time::Instant::now();
    let mut got = 0u64;
    let mut burst = Burst::new();
    while got < total {
        while !burst.is_full() {
            let mut f = pa.get().unwrap();
            f.set_data(&[0u8; 64]);
            burst.push(f).unwrap();
        }
        a.tx_burst(&mut pa, &mut burst).unwrap();
        got += b.rx_burst(&mut pb, &mut burst).unwrap() as u64;
        burst.free_all(&mut pb);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "mem link, one thread: {:.1} Mpps ({:.1} ns/packet incl. set_data of 64 B)",
        got as f64 / secs / 1e6,
        secs * 1e9 / got as f64
    );
}
