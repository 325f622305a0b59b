//! The random generator of every choice that is not a token: dataset splits, an optimizer's
//! picks and shuffles, the calls a replay samples.
//!
//! It is deliberately separate from the token sampler's generator (`engine::sampling`), even
//! though both are xoshiro256** today: each has its own version, recorded where it matters
//! (this one with every run, the sampler's in every cache key), so that changing one never
//! silently changes what the other decides. The golden-value test below fails on any change
//! to the sequence; whoever changes it bumps [`CHOICE_RNG_VERSION`] and the expected values.

/// Bumped whenever a seed could produce a different sequence of choices.
pub const CHOICE_RNG_VERSION: u32 = 1;

/// xoshiro256**, seeded through splitmix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// `k` distinct indices below `n` (all of them when `k >= n`), in a random order.
    pub fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + (self.next_u64() % (n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to the sequence changes splits and optimizer choices of every seed: it must
    /// come with a new [`CHOICE_RNG_VERSION`].
    #[test]
    fn the_sequence_is_pinned_to_its_version() {
        let mut rng = Rng::new(7);
        let draws: Vec<u64> = (0..3).map(|_| rng.next_u64() % 1_000_000).collect();
        let picks = Rng::new(42).choose(10, 4);
        assert_eq!(
            (CHOICE_RNG_VERSION, draws, picks),
            (1, GOLDEN_DRAWS.to_vec(), GOLDEN_PICKS.to_vec()),
            "the choice generator changed: bump CHOICE_RNG_VERSION and update the golden values"
        );
    }

    const GOLDEN_DRAWS: [u64; 3] = [475_994, 782_674, 639_638];
    const GOLDEN_PICKS: [usize; 4] = [2, 1, 3, 7];
}
