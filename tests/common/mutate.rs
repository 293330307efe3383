//! Mutations the reader fuzz tests share (`tests/fuzz_*.rs`): format-blind byte mutations
//! (truncation, flips, insertions, deletions, extreme u32s, duplicated runs) and hostile
//! JSON (values of the wrong type or extreme, structural edits at a random path,
//! text rewrites: duplicated keys, bare NaN, deep nesting, bad UTF-8). Each returns what it
//! did, for the failure report.

use nasrs::Rng;
use serde_json::{json, Value};

pub const U32_EXTREMES: [u32; 9] = [
    0,
    1,
    2,
    255,
    65_536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    u32::MAX,
];

pub const U64_EXTREMES: [u64; 11] = [
    0,
    1,
    7,
    u32::MAX as u64,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 53,
    1 << 63,
    u64::MAX - 7,
    u64::MAX,
];

pub fn pick<T: Clone>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len())].clone()
}

pub fn extreme_u32(rng: &mut Rng) -> u32 {
    if rng.bernoulli(0.15) {
        rng.next_u64() as u32
    } else {
        pick(rng, &U32_EXTREMES)
    }
}

pub fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// A format-blind mutation of `b`, described.
pub fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) -> String {
    let len = b.len();
    match rng.below(8) {
        0 => {
            let at = rng.below(len + 1);
            b.truncate(at);
            format!("truncated to {at} of {len} bytes")
        }
        1 if len > 0 => {
            let k = 1 + rng.below(4);
            let mut at = Vec::new();
            for _ in 0..k {
                let i = rng.below(len);
                b[i] = rng.next_u64() as u8;
                at.push(i);
            }
            format!("{k} random bytes at {at:?}")
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes = random_bytes(rng, n);
            b.splice(at..at, bytes);
            format!("{n} random bytes inserted at {at}")
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = (1 + rng.below(16)).min(len - at);
            b.drain(at..at + n);
            format!("{n} bytes deleted at {at}")
        }
        4 if len >= 4 => {
            let at = rng.below(len - 3) & !3;
            let v = extreme_u32(rng);
            let bytes = if rng.bernoulli(0.5) {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            b[at..at + 4].copy_from_slice(&bytes);
            format!("u32 {v} written at {at}")
        }
        5 if len > 0 => {
            let at = rng.below(len);
            let n = (1 + rng.below(64)).min(len - at);
            let copy = b[at..at + n].to_vec();
            let to = rng.below(len + 1);
            b.splice(to..to, copy);
            format!("{n} bytes from {at} duplicated at {to}")
        }
        6 => {
            let n = rng.below(2);
            b.truncate(n);
            format!("cut to {n} bytes")
        }
        _ => {
            let n = 1 + rng.below(4096);
            let bytes = random_bytes(rng, n);
            b.extend(bytes);
            format!("{n} random bytes appended")
        }
    }
}

// ---- JSON -----------------------------------------------------------------------------------

/// Nested arrays `depth` deep.
pub fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A value of the wrong type, or an extreme one, for any JSON field.
pub fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => json!(null),
        1 => json!(true),
        2 => json!("NaN"),
        3 => json!("Infinity"),
        4 => json!(-1),
        5 => json!(1.5),
        6 => json!(1e308),
        7 => json!(u64::MAX),
        8 => json!(pick(rng, &U64_EXTREMES)),
        9 => json!(""),
        10 => json!([]),
        11 => json!({}),
        12 => json!([[[[1]]]]),
        13 => json!("x".repeat(1 + rng.below(5000))),
        14 => json!({"a": [1, {"b": null}]}),
        _ => json!(pick(rng, &U32_EXTREMES)),
    }
}

/// A mutation of one of a JSON value's leaves or lists, chosen at random, described by path.
pub fn mutate_json(rng: &mut Rng, v: &mut Value, path: &mut String) {
    let descend = rng.bernoulli(0.7);
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = pick(rng, &keys);
            path.push_str(&format!(".{k}"));
            mutate_json(rng, m.get_mut(&k).unwrap(), path);
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.below(a.len());
            path.push_str(&format!("[{i}]"));
            mutate_json(rng, &mut a[i], path);
        }
        Value::Array(a) if rng.bernoulli(0.4) => match rng.below(4) {
            0 => {
                a.clear();
                path.push_str(" emptied");
            }
            1 if !a.is_empty() => {
                let i = rng.below(a.len());
                a.remove(i);
                path.push_str(&format!(" lost item {i}"));
            }
            2 if !a.is_empty() => {
                let k = 1 + rng.below(64);
                let copy = a[rng.below(a.len())].clone();
                a.extend(std::iter::repeat_n(copy, k));
                path.push_str(&format!(" got {k} copies of an item"));
            }
            _ => {
                let x = hostile_value(rng);
                path.push_str(&format!(" got {x} appended"));
                a.push(x);
            }
        },
        Value::Object(m) if rng.bernoulli(0.4) => {
            if rng.bernoulli(0.5) && !m.is_empty() {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = pick(rng, &keys);
                m.remove(&k);
                path.push_str(&format!(" lost {k}"));
            } else {
                m.insert("extra".into(), hostile_value(rng));
                path.push_str(" got a field 'extra'");
            }
        }
        _ => {
            let x = hostile_value(rng);
            let shown: String = x.to_string().chars().take(40).collect();
            path.push_str(&format!(" = {shown}"));
            *v = x;
        }
    }
}

/// Rewrites the JSON text `s` hostilely: duplicated keys, bare NaN, deep nesting, bad UTF-8.
pub fn mutate_json_text(rng: &mut Rng, s: &mut Vec<u8>) -> String {
    match rng.below(6) {
        0 => {
            // A key of the outer object given twice (first with another key's value).
            let Some(m) = serde_json::from_slice::<Value>(s)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .filter(|m| !m.is_empty())
            else {
                return "not an object".into();
            };
            let entries: Vec<(String, Value)> = m.into_iter().collect();
            let key = entries[rng.below(entries.len())].0.clone();
            let value = entries[rng.below(entries.len())].1.clone();
            let mut out = format!("{{{}: {value},", Value::String(key.clone())).into_bytes();
            out.extend_from_slice(&s[1..]);
            *s = out;
            format!("key {key:?} duplicated")
        }
        1 => {
            let tok = pick(
                rng,
                &["NaN", "Infinity", "-Infinity", "1e999", "-0", "0x10"],
            );
            let digits: Vec<usize> = (0..s.len()).filter(|&i| s[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return "no number".into();
            }
            let at = pick(rng, &digits);
            s.splice(at..at + 1, tok.bytes());
            format!("number at {at} became {tok}")
        }
        2 => {
            let depth = pick(rng, &[200, 5_000, 100_000]);
            *s = deep_json(depth).into_bytes();
            format!("nested {depth} deep")
        }
        3 => {
            let at = rng.below(s.len() + 1);
            let junk: &[u8] = pick(
                rng,
                &[
                    &[0xff, 0xfe][..],
                    &[0xc3][..],
                    &[0xef, 0xbb, 0xbf][..],
                    &[0][..],
                ],
            );
            s.splice(at..at, junk.iter().copied());
            format!("bytes {junk:?} at {at}")
        }
        4 => {
            let n = rng.below(3);
            *s = ["", "{}", "[]"][n].as_bytes().to_vec();
            format!("replaced by {:?}", ["", "{}", "[]"][n])
        }
        _ => {
            s.splice(0..0, b"[".iter().copied());
            s.push(b']');
            "wrapped in an array".into()
        }
    }
}
