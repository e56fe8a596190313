//! Raft entries as stored batches (and on the wire: Raft RPCs carry the same bytes).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::{EntryPayload, RaftTypeConfig};
use serde::{Deserialize, Serialize};

use super::{Membership, Node, NodeId, RecordData, log_id};
use crate::log::{
    BatchError, LogError, NewRecord, ValidatedBatch, decode_records, encode_batch,
    encode_control_batch, now_ms,
};

/// Control record type of a blank entry (Kafka's own control types are 0 and 1).
pub const CONTROL_BLANK: i16 = 100;
/// Control record type of a membership entry.
pub const CONTROL_MEMBERSHIP: i16 = 101;

/// An application payload that is stored as the records of one or more batches.
pub trait StoredPayload: Sized {
    /// The payload as encoded batches (base offsets and Raft index are assigned later).
    fn to_batches(&self) -> Result<Vec<ValidatedBatch>, LogError>;
    /// The payload stored in `batches` (whole, CRC-checked, non-control batches back to back).
    fn from_batches(batches: Bytes) -> Result<Self, LogError>;
}

/// Splits back-to-back batches (already checked) at their boundaries, without copying.
pub fn split_checked(mut bytes: Bytes) -> Result<Vec<ValidatedBatch>, LogError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = crate::log::BatchHeader::parse(&bytes)?;
        if header.total_len() > bytes.len() {
            return Err(BatchError::Truncated {
                needed: header.total_len(),
                available: bytes.len(),
            }
            .into());
        }
        out.push(ValidatedBatch::from_checked(
            bytes.split_to(header.total_len()),
        )?);
    }
    Ok(out)
}

impl StoredPayload for RecordData {
    fn to_batches(&self) -> Result<Vec<ValidatedBatch>, LogError> {
        split_checked(self.0.clone())
    }

    fn from_batches(batches: Bytes) -> Result<Self, LogError> {
        Ok(RecordData(batches))
    }
}

/// Encodes one JSON value as a one-record batch (the metadata group's commands).
pub fn json_batch<T: Serialize>(value: &T) -> Result<ValidatedBatch, LogError> {
    let json = serde_json::to_vec(value).map_err(|e| BatchError::Encode(e.to_string()))?;
    let record = NewRecord {
        value: Some(Bytes::from(json)),
        timestamp_ms: now_ms(),
        ..NewRecord::default()
    };
    let bytes = encode_batch(&[record])?;
    ValidatedBatch::from_checked(bytes.freeze())
}

/// Decodes the JSON value of a one-record batch.
pub fn json_from_batch<T: for<'de> Deserialize<'de>>(batch: Bytes) -> Result<T, LogError> {
    let records = decode_records(batch, 0)?;
    let value = records
        .into_iter()
        .next()
        .and_then(|r| r.value)
        .ok_or_else(|| BatchError::Encode("expected one record with a JSON value".into()))?;
    serde_json::from_slice(&value).map_err(|e| BatchError::Encode(e.to_string()).into())
}

/// A membership as stored in a control record.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMembershipJson {
    /// Voter sets (two during a joint change).
    configs: Vec<BTreeSet<NodeId>>,
    /// Every node (voters and learners) with its address.
    nodes: BTreeMap<NodeId, String>,
}

/// A membership as JSON (`{"configs": [[ids]], "nodes": {id: addr}}`).
pub fn membership_json(m: &Membership) -> String {
    serde_json::to_string(&membership_to_json(m)).unwrap_or_default()
}

/// Parses [`membership_json`].
pub fn membership_from_json_str(json: &str) -> Result<Membership, serde_json::Error> {
    if json.is_empty() {
        return Ok(Membership::default());
    }
    serde_json::from_str(json).map(membership_from_json)
}

fn membership_to_json(m: &Membership) -> StoredMembershipJson {
    StoredMembershipJson {
        configs: m.get_joint_config().clone(),
        nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
    }
}

fn membership_from_json(j: StoredMembershipJson) -> Membership {
    let nodes: BTreeMap<NodeId, Node> = j
        .nodes
        .into_iter()
        .map(|(id, addr)| (id, Node { addr }))
        .collect();
    Membership::new(j.configs, nodes)
}

fn control_batch(kind: i16, value: Option<Bytes>) -> Result<ValidatedBatch, LogError> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let record = NewRecord {
        key: Some(Bytes::from(key)),
        value,
        timestamp_ms: now_ms(),
        headers: Vec::new(),
    };
    ValidatedBatch::from_checked(encode_control_batch(&[record])?.freeze())
}

/// The batches that store `entry`, each stamped with its Raft index (`producer_id`) and term
/// (leader epoch). A normal entry may hold several producers' batches (the broker combines the
/// requests that queue up while an entry is being flushed); every batch of an entry carries the
/// same index.
pub fn entry_to_batches<C>(entry: &openraft::Entry<C>) -> Result<Vec<ValidatedBatch>, LogError>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: StoredPayload,
{
    let mut batches = match &entry.payload {
        EntryPayload::Normal(data) => data.to_batches()?,
        EntryPayload::Blank => vec![control_batch(CONTROL_BLANK, None)?],
        EntryPayload::Membership(m) => {
            let json = serde_json::to_vec(&membership_to_json(m))
                .map_err(|e| BatchError::Encode(e.to_string()))?;
            vec![control_batch(CONTROL_MEMBERSHIP, Some(Bytes::from(json)))?]
        }
    };
    if batches.is_empty() {
        return Err(BatchError::Encode("an entry needs at least one batch".into()).into());
    }
    for batch in &mut batches {
        batch.stamp_raft_index(entry.log_id.index);
        // The term travels in the leader epoch (the log stamps it again when appending).
        let base = batch.header().base_offset;
        batch.assign(base, entry.log_id.leader_id.term as i32);
    }
    Ok(batches)
}

/// `entry` as it travels to followers: its stamped batches back to back.
pub fn entry_bytes<C>(entry: &openraft::Entry<C>) -> Result<Bytes, LogError>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: StoredPayload,
{
    let batches = entry_to_batches(entry)?;
    if batches.len() == 1 {
        return Ok(batches[0].to_bytes());
    }
    let mut out = bytes::BytesMut::with_capacity(batches.iter().map(|b| b.len()).sum());
    for b in &batches {
        for part in b.parts() {
            out.extend_from_slice(part);
        }
    }
    Ok(out.freeze())
}

/// The entry stored in `batch`: one or more whole, CRC-checked batches of one Raft index (the
/// first batch's header gives the index, the term and the kind).
pub fn batch_to_entry<C>(batch: Bytes) -> Result<openraft::Entry<C>, LogError>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: StoredPayload,
{
    let header = crate::log::BatchHeader::parse(&batch)?;
    let bad =
        |field: &'static str, value: i64| LogError::from(BatchError::BadField { field, value });
    let index = u64::try_from(header.producer_id)
        .map_err(|_| bad("producer_id (Raft index)", header.producer_id))?;
    let term = u64::try_from(header.partition_leader_epoch).map_err(|_| {
        bad(
            "partition_leader_epoch (Raft term)",
            header.partition_leader_epoch as i64,
        )
    })?;
    let payload = if header.is_control() {
        let record = ValidatedBatch::from_checked(batch)?
            .records()
            .next()
            .ok_or_else(|| BatchError::Encode("control batch without a record".into()))??;
        let kind = record
            .key
            .as_ref()
            .filter(|k| k.len() == 4)
            .map(|k| i16::from_be_bytes([k[2], k[3]]))
            .unwrap_or(-1);
        match kind {
            CONTROL_BLANK => EntryPayload::Blank,
            CONTROL_MEMBERSHIP => {
                let value = record.value.unwrap_or_default();
                let json: StoredMembershipJson = serde_json::from_slice(&value)
                    .map_err(|e| BatchError::Encode(format!("membership record: {e}")))?;
                EntryPayload::Membership(membership_from_json(json))
            }
            other => {
                return Err(bad("control record type", other as i64));
            }
        }
    } else {
        EntryPayload::Normal(C::D::from_batches(batch)?)
    };
    Ok(openraft::Entry {
        log_id: log_id(term, index),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::PartitionRaft;

    #[test]
    fn entries_round_trip_through_batches() {
        let records = encode_batch(&[NewRecord {
            value: Some(Bytes::from_static(b"v")),
            ..NewRecord::default()
        }])
        .unwrap()
        .freeze();
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([
                (1, Node { addr: "a:1".into() }),
                (2, Node { addr: "b:2".into() }),
                (3, Node { addr: "c:3".into() }),
            ]),
        );
        let entries: Vec<openraft::Entry<PartitionRaft>> = vec![
            openraft::Entry {
                log_id: log_id(3, 7),
                payload: EntryPayload::Blank,
            },
            openraft::Entry {
                log_id: log_id(3, 8),
                payload: EntryPayload::Membership(membership.clone()),
            },
            openraft::Entry {
                log_id: log_id(4, 9),
                payload: EntryPayload::Normal(RecordData(records)),
            },
        ];
        for entry in entries {
            // As sent to a follower: no help from a log in between.
            let bytes = entry_bytes(&entry).unwrap();
            // The stamped batch still passes the full check (CRC recomputed).
            crate::log::check_batch(&bytes).unwrap();
            let back = batch_to_entry::<PartitionRaft>(bytes).unwrap();
            assert_eq!(back.log_id, entry.log_id);
            match (&back.payload, &entry.payload) {
                (EntryPayload::Blank, EntryPayload::Blank) => {}
                (EntryPayload::Membership(a), EntryPayload::Membership(b)) => assert_eq!(a, b),
                (EntryPayload::Normal(a), EntryPayload::Normal(_)) => {
                    let records = decode_records(a.0.clone(), 0).unwrap();
                    assert_eq!(records[0].value.as_deref(), Some(&b"v"[..]));
                }
                other => panic!("payload changed: {other:?}"),
            }
        }
    }
}
