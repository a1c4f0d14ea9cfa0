//! Consistent-hashing tables: Envoy's ring hash (`RING_HASH`, xxHash64 of `"<address>_<i>"`)
//! and Maglev (`MAGLEV`). Both are built over every host of a priority level; a lookup walks
//! forward from the hash's slot to the first host the caller accepts, so hosts that are ejected
//! or unhealthy are skipped and keys come back to them when they return.

/// xxHash64 (Envoy's `HashUtil::xxHash64`), for ring and table positions.
pub fn xxhash64(data: &[u8], seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, input: u64) -> u64 {
        acc.wrapping_add(input.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(acc: u64, val: u64) -> u64 {
        (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
    }
    fn u64_at(b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    }
    fn u32_at(b: &[u8]) -> u64 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[..4]);
        u64::from(u32::from_le_bytes(a))
    }
    let len = data.len() as u64;
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 32 {
            for (i, v) in v.iter_mut().enumerate() {
                *v = round(*v, u64_at(&rest[i * 8..]));
            }
            rest = &rest[32..];
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for v in v {
            h = merge(h, v);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len);
    while rest.len() >= 8 {
        h ^= round(0, u64_at(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        h ^= u32_at(rest).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for b in rest {
        h ^= u64::from(*b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// A ring of (hash, host index) sorted by hash.
#[derive(Debug, Clone)]
pub struct Ring {
    entries: Vec<(u64, usize)>,
}

impl Ring {
    /// Envoy's construction: each host gets `scale × weight / total` entries, where the scale
    /// makes the lightest host get at least `min_size × its share` and the ring stays under
    /// `max_size`.
    pub fn new(hosts: &[(String, u32)], min_size: u64, max_size: u64) -> Ring {
        let total: f64 = hosts.iter().map(|(_, w)| f64::from(*w)).sum();
        if hosts.is_empty() || total <= 0.0 {
            return Ring {
                entries: Vec::new(),
            };
        }
        let min_weight = hosts
            .iter()
            .map(|(_, w)| f64::from(*w) / total)
            .fold(1.0, f64::min);
        let scale = ((min_weight * min_size as f64).ceil() / min_weight).min(max_size as f64);
        let mut entries = Vec::with_capacity(scale as usize + hosts.len());
        let (mut current, mut target) = (0.0f64, 0.0f64);
        for (idx, (name, w)) in hosts.iter().enumerate() {
            target += scale * f64::from(*w) / total;
            let mut i = 0u64;
            while current < target {
                let key = format!("{name}_{i}");
                entries.push((xxhash64(key.as_bytes(), 0), idx));
                i += 1;
                current += 1.0;
            }
        }
        entries.sort_unstable();
        Ring { entries }
    }

    /// The first accepted host at or after `hash` on the ring.
    pub fn lookup(&self, hash: u64, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.entries.len();
        let start = self.entries.partition_point(|(h, _)| *h < hash);
        (0..n)
            .map(|k| self.entries[(start + k) % n].1)
            .find(|idx| accept(*idx))
    }
}

/// A Maglev lookup table of host indices.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<usize>,
}

impl Maglev {
    /// Envoy's weighted Maglev population over `table_size` slots (a prime).
    pub fn new(hosts: &[(String, u32)], table_size: u64) -> Maglev {
        let size = table_size.max(1);
        let max_weight = hosts.iter().map(|(_, w)| u64::from(*w)).max().unwrap_or(0);
        if hosts.is_empty() || max_weight == 0 {
            return Maglev { table: Vec::new() };
        }
        struct Entry {
            offset: u64,
            skip: u64,
            weight: u64,
            target: u64,
            next: u64,
        }
        let mut entries: Vec<Entry> = hosts
            .iter()
            .map(|(name, w)| Entry {
                offset: xxhash64(name.as_bytes(), 0) % size,
                skip: xxhash64(name.as_bytes(), 1) % (size - 1).max(1) + 1,
                weight: u64::from(*w),
                target: 0,
                next: 0,
            })
            .collect();
        let mut table = vec![usize::MAX; size as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < size {
            for (idx, e) in entries.iter_mut().enumerate() {
                if filled >= size {
                    break;
                }
                if e.weight == 0 || iteration * e.weight < e.target {
                    continue;
                }
                e.target += max_weight;
                let mut c = (e.offset + e.skip * e.next) % size;
                while table[c as usize] != usize::MAX {
                    e.next += 1;
                    c = (e.offset + e.skip.wrapping_mul(e.next)) % size;
                }
                table[c as usize] = idx;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Maglev { table }
    }

    /// The accepted host at `hash`'s slot, or the first accepted one after it.
    pub fn lookup(&self, hash: u64, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.table.len();
        if n == 0 {
            return None;
        }
        let start = (hash % n as u64) as usize;
        (0..n)
            .map(|k| self.table[(start + k) % n])
            .find(|idx| accept(*idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxhash64_matches_reference_vectors() {
        let cases: [(&[u8], u64, u64); 4] = [
            (b"", 0, 0xEF46_DB37_51D8_E999),
            (b"a", 0, 0xD24E_C4F1_A98C_6E5B),
            (b"abc", 0, 0x44BC_2CF5_AD77_0999),
            (
                b"Nobody inspects the spammish repetition",
                0,
                0xFBCE_A83C_8A37_8BF1,
            ),
        ];
        for (input, seed, want) in cases {
            assert_eq!(
                xxhash64(input, seed),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn hosts(n: u8) -> Vec<(String, u32)> {
        (1..=n).map(|i| (format!("10.0.0.{i}:80"), 1)).collect()
    }

    #[test]
    fn tables_spread_keys_by_weight() {
        let mut weighted = hosts(3);
        weighted[0].1 = 2;
        let ring = Ring::new(&weighted, 1024, 8 << 20);
        let maglev = Maglev::new(&weighted, 65537);
        let lookups: [&dyn Fn(u64) -> Option<usize>; 2] = [&|h| ring.lookup(h, &|_| true), &|h| {
            maglev.lookup(h, &|_| true)
        }];
        for lookup in lookups {
            let mut counts = [0u32; 3];
            for k in 0..20_000u64 {
                let h = xxhash64(&k.to_le_bytes(), 7);
                counts[lookup(h).expect("non-empty")] += 1;
            }
            // Host 0 has half the weight.
            assert!((8_500..11_500).contains(&counts[0]), "{counts:?}");
            assert!(counts[1] > 3_500 && counts[2] > 3_500, "{counts:?}");
        }
    }

    #[test]
    fn skipped_hosts_move_only_their_keys() {
        let ring = Ring::new(&hosts(4), 1024, 8 << 20);
        for k in 0..2_000u64 {
            let h = xxhash64(&k.to_le_bytes(), 0);
            let all = ring.lookup(h, &|_| true).expect("non-empty");
            let without_2 = ring.lookup(h, &|i| i != 2).expect("non-empty");
            if all != 2 {
                assert_eq!(all, without_2, "keys of other hosts stay");
            }
        }
    }
}
