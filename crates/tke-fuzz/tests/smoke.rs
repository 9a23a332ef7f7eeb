//! The smoke run of every fuzz target, in CI: the committed corpus (`fuzz/corpus/TARGET`,
//! crashes found once stay there as regression inputs), fresh seeds, and a fixed number of
//! deterministic mutations of each seed. The coverage-guided runs are `ci/fuzz.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, path::Path};

/// Mutations per target: enough to leave the seeds' happy paths (truncations, flipped
/// bits, changed lengths), few enough to stay a smoke run on two cores.
const MUTATIONS: usize = 20_000;

/// xorshift64*: deterministic, so a failure here replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four random edits of `input`: flip a bit, set a byte to an edge value, insert,
/// delete, truncate.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(5) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = [0x00, 0x01, 0x7f, 0x80, 0x81, 0xff][rng.below(6)],
            2 => v.insert(at.min(v.len()), rng.next() as u8),
            3 if !v.is_empty() => {
                v.remove(at);
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn every_target_survives_its_corpus_seeds_and_their_mutations() {
    let mut seeds: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    for (target, input) in tke_fuzz::seeds() {
        seeds.entry(target).or_default().push(input);
    }
    for (name, target) in tke_fuzz::TARGETS {
        let inputs = seeds.remove(name).unwrap_or_default();
        assert!(!inputs.is_empty(), "no seed for {name}");
        for input in corpus(name).iter().chain(&inputs) {
            target(input);
        }
        let mut rng = Rng(0x7ced_5eed ^ name.len() as u64);
        for i in 0..MUTATIONS {
            let input = mutate(&mut rng, &inputs[i % inputs.len()]);
            target(&input);
        }
    }
    assert!(seeds.is_empty(), "seeds for unknown targets: {seeds:?}");
}
