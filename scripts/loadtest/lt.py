#!/usr/bin/env python3
"""Helpers of scripts/loadtest.sh (python3 standard library only, except
`report`, which needs matplotlib).

  lt.py snap PID...                 CPU snapshot (JSON on stdout): /proc/stat
                                    and utime+stime of every thread of PIDs
  lt.py combine --meta JSON --before F --after F --sink F SEND_FILE...
                                    one result line (JSON) from a measurement
  lt.py summary RESULTS.jsonl       table + the three last lines
  lt.py report RUN_DIR              bench/REPORT.md section + PNG plots

Units: sizes are IP packet lengths; Gbps counts IP bytes (no Ethernet);
CPU is in nanoseconds per delivered packet.
"""
import json
import os
import re
import statistics
import sys
import time

TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")
SIZES = ["64", "512", "1400", "imix"]


# ------------------------------------------------------------------ snap

def proc_stat_busy():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + v[4]
    return {"busy": sum(v[:8]) - idle, "total": sum(v[:8]), "softirq": v[6]}


def threads(pid):
    out = {}
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{base}/{tid}/stat") as f:
                s = f.read()
            comm = s[s.index("(") + 1:s.rindex(")")]
            rest = s[s.rindex(")") + 2:].split()
            # fields 14, 15 (utime, stime) are rest[11], rest[12]
            out[tid] = [comm, int(rest[11]) + int(rest[12])]
        except (OSError, ValueError, IndexError):
            continue
    return out


def cmd_snap(pids):
    snap = {"t": time.monotonic(), "stat": proc_stat_busy(),
            "procs": {p: threads(p) for p in pids}}
    print(json.dumps(snap))


# ------------------------------------------------------------------ combine

def cpu_delta(before, after):
    """Per process and per thread CPU seconds between two snapshots."""
    out = {"wall": after["t"] - before["t"]}
    sb, sa = before["stat"], after["stat"]
    out["machine_busy_s"] = (sa["busy"] - sb["busy"]) * TICK_NS / 1e9
    out["machine_softirq_s"] = (sa["softirq"] - sb["softirq"]) * TICK_NS / 1e9
    procs = {}
    for pid, ta in after["procs"].items():
        tb = before["procs"].get(pid, {})
        ths = []
        for tid, (comm, ticks) in ta.items():
            d = ticks - tb.get(tid, [comm, 0])[1]
            ths.append({"tid": tid, "comm": comm, "cpu_s": d * TICK_NS / 1e9})
        ths.sort(key=lambda t: -t["cpu_s"])
        procs[pid] = {"cpu_s": sum(t["cpu_s"] for t in ths), "threads": ths}
    out["procs"] = procs
    return out


def load_json_line(path):
    try:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def cmd_combine(args):
    meta = json.loads(args[args.index("--meta") + 1])
    before = load_json_line(args[args.index("--before") + 1])
    after = load_json_line(args[args.index("--after") + 1])
    sink = load_json_line(args[args.index("--sink") + 1])
    i = args.index("--send")
    sends = [s for s in (load_json_line(p) for p in args[i + 1:]) if s]
    r = dict(meta)
    r["ts"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    r["send"] = sends
    r["sink"] = sink
    sent = sum(s["sent"] for s in sends)
    sent_bytes = sum(s["ip_bytes"] for s in sends)
    send_secs = max((s["secs"] for s in sends), default=0) or 1e-9
    r["offered_pps"] = sent / send_secs
    r["offered_gbps"] = sent_bytes * 8 / send_secs / 1e9
    uniq = sink["unique"] if sink else 0
    got_bytes = sink["ip_bytes"] if sink else 0
    # Delivered rate over the sender's interval: a gateway that queues
    # and delivers late does not get credit for a shorter window.
    window = max(send_secs, sink["secs"] if sink else 0)
    r["delivered_pps"] = uniq / window
    r["delivered_gbps"] = got_bytes * 8 / window / 1e9
    r["loss_pct"] = 100.0 * (sent - uniq) / sent if sent else 100.0
    r["dup"] = sink["dup"] if sink else 0
    r["late"] = sink["late"] if sink else 0
    r["lat_p50_us"] = sink["lat_p50_us"] if sink else None
    r["lat_p99_us"] = sink["lat_p99_us"] if sink else None
    if before and after:
        cpu = cpu_delta(before, after)
        r["cpu"] = cpu
        gw_s = sum(p["cpu_s"] for p in cpu["procs"].values())
        r["gw_cpu_s"] = gw_s
        r["gw_ns_per_pkt"] = gw_s * 1e9 / uniq if uniq else None
        r["machine_ns_per_pkt"] = cpu["machine_busy_s"] * 1e9 / uniq if uniq else None
        workers = []
        for pid, p in cpu["procs"].items():
            for t in p["threads"]:
                if re.match(r"(espgate-w|xdpfwd-q)\d+", t["comm"]):
                    workers.append({"name": t["comm"], "cpu_s": t["cpu_s"], "pid": pid})
        workers.sort(key=lambda w: w["name"])
        r["workers_cpu"] = workers
    print(json.dumps(r))


# ------------------------------------------------------------------ summary

def read_results(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def median_rows(rows):
    """Median over rounds of each (config, size)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["config"], str(r["size"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        def med(k):
            v = [x[k] for x in rs if x.get(k) is not None]
            return statistics.median(v) if v else None
        m = {k: med(k) for k in ["loadavg1", "offered_pps", "offered_gbps", "delivered_pps",
                                  "delivered_gbps", "loss_pct", "lat_p50_us",
                                  "lat_p99_us", "gw_ns_per_pkt", "machine_ns_per_pkt"]}
        m.update({k: rs[0].get(k) for k in ["leg", "config", "workers", "tunnels", "label"]})
        m["size"] = key[1]
        m["rounds"] = len(rs)
        m["dup"] = sum(x.get("dup", 0) for x in rs)
        m["late"] = sum(x.get("late", 0) for x in rs)
        g = [x["delivered_gbps"] for x in rs]
        m["gbps_range"] = f"{min(g):.3f}-{max(g):.3f}" if len(g) > 1 else "-"
        m["sink_drops"] = sum(x.get("sink_rcvbuf_drops", 0) for x in rs)
        wk = {}
        for x in rs:
            for w in x.get("workers_cpu", []) or []:
                pk = x["delivered_pps"] * x.get("cpu", {}).get("wall", 0)
                wk.setdefault(w["name"], []).append(w["cpu_s"] * 1e9 / pk if pk else None)
        m["worker_ns_per_pkt"] = {n: statistics.median([v for v in vs if v is not None])
                                  for n, vs in wk.items() if any(v is not None for v in vs)}
        out[key] = m
    return out


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


COLORS = {"forward-q1": "tab:blue", "forward-q2": "tab:cyan", "swan-t1": "tab:green",
          "swan-t2": "tab:olive", "espgate-w1-t1": "tab:red", "espgate-w2-t1": "tab:purple",
          "espgate-w1-t2": "tab:orange", "espgate-w2-t2": "tab:brown"}


def config_order(cfg):
    order = ["forward-q1", "forward-q2", "swan-t1", "swan-t2", "espgate-w1-t1", "espgate-w2-t1",
             "espgate-w1-t2", "espgate-w2-t2"]
    return order.index(cfg) if cfg in order else len(order)


def table_rows(meds):
    keys = sorted(meds, key=lambda k: (config_order(k[0]), SIZES.index(k[1]) if k[1] in SIZES else 9))
    head = ["config", "size", "offered kpps", "offered Gbps", "delivered kpps",
            "delivered Gbps", "rounds min-max", "loss %", "p50 us", "p99 us", "gw ns/pkt",
            "machine ns/pkt", "late", "sink drops", "load", "per worker ns/pkt"]
    rows = []
    for k in keys:
        m = meds[k]
        wk = " ".join(f"{n}:{v:.0f}" for n, v in sorted(m["worker_ns_per_pkt"].items()))
        rows.append([m["config"], m["size"], fmt(m["offered_pps"] / 1e3, 1),
                     fmt(m["offered_gbps"], 3), fmt(m["delivered_pps"] / 1e3, 1),
                     fmt(m["delivered_gbps"], 3), m["gbps_range"], fmt(m["loss_pct"], 1),
                     fmt(m["lat_p50_us"], 0), fmt(m["lat_p99_us"], 0),
                     fmt(m["gw_ns_per_pkt"], 0), fmt(m["machine_ns_per_pkt"], 0),
                     m["late"], m["sink_drops"], fmt(m["loadavg1"], 1), wk or "-"])
    return head, rows


def last_lines(meds):
    def g(cfg, size="1400"):
        m = meds.get((cfg, size))
        return m["delivered_gbps"] if m else None

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "n/a"

    def gb(v):
        return f"{v:.3f}" if v is not None else "n/a"
    # Like for like: one espgate worker against one forwarding thread; the
    # two-queue pair is printed before the three lines issue 7 asks for.
    e2e, fwd, swan = g("espgate-w1-t1"), g("forward-q1"), g("swan-t1")
    w1, w2 = g("espgate-w1-t1"), g("espgate-w2-t1")
    t1, t2 = g("espgate-w1-t2"), g("espgate-w2-t2")
    return [
        f"e2e 1400B 2 workers: {gb(w2)} Gbps; plain forward 2 queues: {gb(g('forward-q2'))} Gbps; ratio: {ratio(w2, g('forward-q2'))}",
        f"workers 2 vs 1 (two tunnels): ratio: {ratio(t2, t1)}",
        f"e2e 1400B: {gb(e2e)} Gbps; plain forward: {gb(fwd)} Gbps; ratio: {ratio(e2e, fwd)}",
        f"e2e 1400B: {gb(e2e)} Gbps; strongswan: {gb(swan)} Gbps; ratio: {ratio(e2e, swan)}",
        f"workers 2 vs 1 (one tunnel): ratio: {ratio(w2, w1)}",
    ]


def cmd_summary(path):
    rows = read_results(path)
    meds = median_rows(rows)
    head, body = table_rows(meds)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for r in body:
        print("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))
    skipped = os.path.join(os.path.dirname(path), "skipped.txt")
    if os.path.exists(skipped):
        with open(skipped) as f:
            for line in f:
                print("skipped: " + line.rstrip())
    for line in last_lines(meds):
        print(line)


# ------------------------------------------------------------------ report

def cmd_report(run_dir, out_md, img_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_results(os.path.join(run_dir, "results.jsonl"))
    meds = median_rows(rows)
    env = load_json_line(os.path.join(run_dir, "env.json")) or {}
    os.makedirs(img_dir, exist_ok=True)
    rel = os.path.relpath(img_dir, os.path.dirname(out_md))
    configs = sorted({k[0] for k in meds}, key=config_order)

    # throughput vs packet size
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for c in configs:
        xs = [s for s in SIZES if (c, s) in meds]
        ax[0].plot(xs, [meds[(c, s)]["delivered_gbps"] for s in xs], marker="o", label=c,
                   color=COLORS.get(c))
        ax[1].plot(xs, [meds[(c, s)]["delivered_pps"] / 1e3 for s in xs], marker="o", label=c,
                   color=COLORS.get(c))
    ax[0].set_ylabel("delivered Gbps (IP bytes)")
    ax[1].set_ylabel("delivered kpps")
    for a in ax:
        a.set_xlabel("IP packet size (B)")
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=8)
    fig.suptitle("veth load test: throughput vs packet size")
    fig.tight_layout()
    fig.savefig(os.path.join(img_dir, "throughput_vs_size.png"), dpi=100)
    plt.close(fig)

    # scaling vs workers
    fig, ax = plt.subplots(figsize=(6, 4))
    have_scaling = False
    for t in (1, 2):
        for s in ("1400", "64"):
            pts = [(w, meds[(f"espgate-w{w}-t{t}", s)]["delivered_gbps"])
                   for w in (1, 2) if (f"espgate-w{w}-t{t}", s) in meds]
            if pts:
                have_scaling = True
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"{t} tunnel{'s' if t > 1 else ''}, {s} B")
    pts = [(q, meds[(f"forward-q{q}", "1400")]["delivered_gbps"])
           for q in (1, 2) if (f"forward-q{q}", "1400") in meds]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--", color="grey", marker="x",
                label="plain AF_XDP forward, 1400 B (queues)")
    ax.set_xlabel("workers")
    ax.set_xticks([1, 2])
    ax.set_ylabel("delivered Gbps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("espgate scaling vs workers" + ("" if have_scaling else " (no espgate data)"))
    fig.tight_layout()
    fig.savefig(os.path.join(img_dir, "scaling_vs_workers.png"), dpi=100)
    plt.close(fig)

    # latency CDF at 1400 B (first round's sink percentiles)
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in configs:
        r = next((x for x in rows if x["config"] == c and str(x["size"]) == "1400"
                  and x.get("sink")), None)
        if not r:
            continue
        pts = [(us, p) for p, us in r["sink"]["lat_cdf_us"] if us > 0]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=c,
                    color=COLORS.get(c))
    ax.set_xscale("log")
    ax.set_xlabel("one-way latency (us)")
    ax.set_ylabel("percentile")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("latency CDF, 1400 B, offered at the generator's rate")
    fig.tight_layout()
    fig.savefig(os.path.join(img_dir, "latency_cdf.png"), dpi=100)
    plt.close(fig)

    head, body = table_rows(meds)
    md = []
    md.append("<!-- loadtest:begin (generated by scripts/loadtest-report.sh; edits are overwritten) -->")
    md.append("## veth load test")
    md.append("")
    md.append(f"* date: {env.get('date', '?')}, run `{os.path.basename(os.path.normpath(run_dir))}`")
    md.append(f"* CPU: {env.get('cpu', '?')} ({env.get('nproc', '?')} CPUs), kernel {env.get('kernel', '?')}")
    md.append(f"* load average at start: {env.get('loadavg', '?')} (the machine is shared: "
              "other work competes for the same cores; column `load` is the 1-minute load "
              "average after each point, median over rounds)")
    md.append(f"* mode: {env.get('mode', '?')}, {env.get('secs', '?')} s per point, "
              f"{env.get('rounds', '?')} round(s) (median), offered rate {env.get('rate', '?')} pps "
              "(0 = as fast as the generator goes)")
    md.append("* topology: h1 (YELLOW+BLUE) → gw1 → wan (kernel router) → gw2 → h2 (PURPLE), "
              "veth pairs, WAN MTU 1600; sizes are IP packet lengths, Gbps counts IP bytes")
    md.append("* configs: `forward-qQ` = xdp_forward (AF_XDP, no crypto, one thread per queue, Q "
              "queues) on both gateways, the I/O ceiling; `swan-tN` = strongSwan 5.9 kernel-libipsec (ESP-in-UDP, AES-256-CBC + "
              "HMAC-SHA-256) with N tunnels; `espgate-wW-tN` = espgate with W workers and N tunnels "
              "(AES-256-CBC + HMAC-SHA-256)")
    md.append("* gw ns/pkt: CPU time of the gateway processes (both gateways, all threads) per "
              "delivered packet; machine ns/pkt: all CPU time of the machine (generator, sink, "
              "softirq, others) per delivered packet")
    md.append("")
    md.append("| " + " | ".join(head) + " |")
    md.append("|" + "---|" * len(head))
    for r in body:
        md.append("| " + " | ".join(str(x) for x in r) + " |")
    md.append("")
    skipped = os.path.join(run_dir, "skipped.txt")
    if os.path.exists(skipped):
        with open(skipped) as f:
            for line in f:
                md.append(f"* skipped: {line.rstrip()}")
        md.append("")
    md.append("```")
    md.extend(last_lines(meds))
    md.append("```")
    md.append("")
    md.append(f"![throughput vs size]({rel}/throughput_vs_size.png)")
    md.append(f"![scaling vs workers]({rel}/scaling_vs_workers.png)")
    md.append(f"![latency CDF]({rel}/latency_cdf.png)")
    md.append("<!-- loadtest:end -->")
    section = "\n".join(md) + "\n"

    old = ""
    if os.path.exists(out_md):
        with open(out_md) as f:
            old = f.read()
    m = re.search(r"<!-- loadtest:begin.*?<!-- loadtest:end -->\n?", old, re.S)
    if m:
        new = old[:m.start()] + section + old[m.end():]
    elif old:
        new = old.rstrip("\n") + "\n\n" + section
    else:
        new = "# espgate benchmark report\n\n" + section
    with open(out_md, "w") as f:
        f.write(new)
    print(f"wrote {out_md} and {img_dir}/*.png")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "snap":
        cmd_snap(args)
    elif cmd == "combine":
        cmd_combine(args)
    elif cmd == "summary":
        cmd_summary(args[0])
    elif cmd == "report":
        cmd_report(args[0], args[1], args[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
