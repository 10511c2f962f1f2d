//! [`KafkaOffset`]: where a delivery sits, inside its [`Position`](firefly_webhook::Position).

use std::fmt;

/// The transport name, in [`Position`](firefly_webhook::Position)s and
/// [`Broker::name`](firefly_webhook::Broker::name).
pub(crate) const TRANSPORT: &str = "kafka";

/// A record's topic, partition and offset: the value of a Kafka delivery's
/// [`Position`](firefly_webhook::Position). `Display` shows `topic/partition@offset`.
///
/// ```
/// use firefly_webhook::Position;
/// use firefly_webhook_kafka::KafkaOffset;
///
/// # fn check(position: &Position) {
/// // In a processor or a test: `delivery.position`.
/// if let Some(at) = position.downcast_ref::<KafkaOffset>() {
///     println!("{} partition {} offset {}", at.topic, at.partition, at.offset);
/// }
/// # }
/// let at = KafkaOffset { topic: "github".into(), partition: 2, offset: 41 };
/// assert_eq!(at.to_string(), "github/2@41");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset in the partition.
    pub offset: i64,
}

impl fmt::Display for KafkaOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use firefly_webhook::Position;

    use super::*;

    #[test]
    fn position_round_trip() {
        let at = KafkaOffset {
            topic: "stripe".into(),
            partition: 0,
            offset: 7,
        };
        let position = Position::new(TRANSPORT, at.clone());
        assert_eq!(position.transport(), "kafka");
        assert_eq!(position.downcast_ref::<KafkaOffset>(), Some(&at));
        assert_eq!(position.to_string(), "kafka:stripe/0@7");
    }
}
