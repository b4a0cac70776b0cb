//! PRF_HMAC_SHA2_256 against RFC 4231 §4 (vectors/rfc4231.txt).

use espgate_controlplane::ike::prf::prf;

#[test]
fn rfc4231_vectors() {
    let text = include_str!("vectors/rfc4231.txt");
    let mut checked = 0;
    for record in text.split("\n\n") {
        let mut key = None;
        let mut data = None;
        let mut want = None;
        for line in record
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (name, value) = line.split_once(" = ").expect("name = hex");
            let value = hex::decode(value.trim()).expect("hex");
            match name {
                "key" => key = Some(value),
                "data" => data = Some(value),
                "prf" => want = Some(value),
                other => panic!("unknown field {other}"),
            }
        }
        if let (Some(k), Some(d), Some(w)) = (key, data, want) {
            assert_eq!(prf(&k, &[&d]).to_vec(), w, "RFC 4231 record {checked}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}
