#!/usr/bin/python3
"""Turns the output of capture-strongswan.sh (pair.pcap, init/charon.log) into
the name = hex lines of strongswan-5.9.8-ikev2-psk.txt."""
import re, subprocess, sys

d = sys.argv[1]
names = ["ike_sa_init_request", "ike_sa_init_response", "ike_auth_request",
         "ike_auth_response", "create_child_sa_request", "create_child_sa_response",
         "informational_request", "informational_response"]
rows = subprocess.run(["tshark", "-r", f"{d}/pair.pcap", "-T", "fields", "-e", "udp.srcport",
                       "-e", "udp.dstport", "-e", "udp.payload"],
                      capture_output=True, text=True, check=True).stdout.split("\n")
for name, line in zip(names, [l for l in rows if l.strip()]):
    sp, dp, payload = line.split("\t")
    payload = payload.replace(":", "")
    note = ""
    if "4500" in (sp, dp) or "14500" in (sp, dp):
        assert payload.startswith("00000000"), "expected non-ESP marker"
        payload, note = payload[8:], "  (non-ESP marker stripped)"
    print(f"# udp {sp} -> {dp}{note}\n{name} = {payload}")

dumps, lines, i = {}, open(f"{d}/init/charon.log").read().split("\n"), 0
while i < len(lines):
    m = re.search(r"\[(?:IKE|CHD)\] (.*?) => (\d+) bytes @", lines[i])
    i += 1
    if not m:
        continue
    data = ""
    while i < len(lines) and (h := re.match(r"^\d+\[(?:IKE|CHD)\]\s+\d+: ((?:[0-9A-F]{2} ?)+)", lines[i])):
        data += "".join(h.group(1).split())
        i += 1
    assert len(data) == 2 * int(m.group(2))
    dumps.setdefault(m.group(1).strip(), []).append(data.lower())

print("# keys logged by the initiator (charon filelog ike = 4)")
for label, name in [("shared Diffie Hellman secret", "g_ir"), ("SKEYSEED", "skeyseed"),
                    ("Sk_d secret", "sk_d"), ("Sk_ai secret", "sk_ai"), ("Sk_ar secret", "sk_ar"),
                    ("Sk_ei secret", "sk_ei"), ("Sk_er secret", "sk_er"), ("Sk_pi secret", "sk_pi"),
                    ("Sk_pr secret", "sk_pr")]:
    print(f"{name} = {dumps[label][0]}")
octets = dumps["octets = message + nonce + prf(Sk_px, IDx')"]
auth = dumps["AUTH = prf(prf(secret, keypad), octets)"]
print('# PSK AUTH (secret = "cisco123"): octets signed by the initiator, its AUTH, the responder\'s AUTH')
print(f"auth_i_octets = {octets[0]}\nauth_i = {auth[0]}\nauth_r_octets = {octets[1]}\nauth_r = {auth[1]}")
print("# child SA keys logged by the initiator (chd = 4). seed = Ni | Nr for the")
print("# IKE_AUTH child, g^ir (new) | Ni | Nr for the CREATE_CHILD_SA child (PFS).")
print("# encr_i/integ_i protect initiator-to-responder traffic; GCM keys end with the 4-byte salt.")
seeds = dumps["seed"]
print(f"child1_seed = {seeds[0]}")
for label, name in [("encryption initiator key", "encr_i"), ("encryption responder key", "encr_r"),
                    ("integrity initiator key", "integ_i"), ("integrity responder key", "integ_r")]:
    print(f"child1_{name} = {dumps[label][0]}")
print(f"child2_seed = {seeds[1]}")
print(f"child2_encr_i = {dumps['encryption initiator key'][1]}")
print(f"child2_encr_r = {dumps['encryption responder key'][1]}")
