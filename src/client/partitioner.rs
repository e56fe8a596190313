//! Kafka's default partitioner for keyed records: `toPositive(murmur2(key)) % partitions`, so a
//! key lands on the same partition with logbook as with a Kafka producer.

/// The seed Kafka's `Utils.murmur2` uses.
const KAFKA_SEED: u32 = 0x9747_b28c;

/// Kafka's 32-bit murmur2 of `key`.
pub fn kafka_murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, KAFKA_SEED) as i32
}

/// The partition of `key` among `partitions` (which must be > 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (kafka_murmur2(key) as u32 & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_murmur2() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(kafka_murmur2(key.as_bytes()), want, "{key}");
        }
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for key in ["a", "b", "orders-42"] {
            let p = partition_for_key(key.as_bytes(), 7);
            assert!(p < 7);
            assert_eq!(p, partition_for_key(key.as_bytes(), 7));
        }
    }
}
