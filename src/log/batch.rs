//! Record batches in Kafka's RecordBatch v2 layout.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset              assigned by the log
//!      8     4  batch_length             bytes after this field
//!     12     4  partition_leader_epoch   the Raft term of the leader that appended it
//!     16     1  magic                    always 2
//!     17     4  crc                      CRC-32C of bytes 21..end
//!     21     2  attributes               bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id              -1
//!     51     2  producer_epoch           -1
//!     53     4  base_sequence            -1
//!     57     4  records_count
//!     61     …  records (zigzag varints: length, attributes, timestamp delta, offset delta,
//!               key, value, headers)
//! ```
//!
//! The CRC does not cover the base offset or the leader epoch, so the log assigns both by patching
//! the header in place without recomputing anything.
//!
//! Encoding goes through the `kafka-protocol` crate (the reference codec). Decoding uses our own
//! zero-copy reader: it slices `Bytes` instead of copying, and it bounds every length and count
//! before allocating, where the crate's decoder trusts counts from the wire (a CRC-valid batch with
//! a huge header count would make it allocate without limit).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record as KafkaRecord, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

/// Bytes before `batch_length` counts: the base offset (8) and the length itself (4).
pub const BATCH_OVERHEAD: usize = 12;
/// Size of the fixed batch header, up to and including `records_count`.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only supported magic byte.
pub const MAGIC_V2: i8 = 2;
/// Where the CRC-covered region starts.
const CRC_START: usize = 21;
/// Where the stored CRC is.
const CRC_AT: usize = 17;
/// Where `producer_id` is (it holds the Raft log index of the entry).
const PRODUCER_ID_AT: usize = 43;
/// Smallest possible record: seven one-byte fields.
const MIN_RECORD_LEN: usize = 7;
/// Attribute bits.
const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length needs.
    #[error("batch is truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// Not RecordBatch v2.
    #[error("unsupported magic byte {0} (only RecordBatch v2 is supported)")]
    BadMagic(i8),
    /// A header field holds an impossible value.
    #[error("invalid header field {field}: {value}")]
    BadField {
        /// Field name.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// The CRC-32C does not match the contents.
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Compressed batches are not accepted yet.
    #[error("compressed batches (codec {0}) are not supported")]
    Compressed(u8),
    /// Transactional batches are not accepted.
    #[error("transactional batches are not supported")]
    Transactional,
    /// A producer batch must hold `records_count` records with offset deltas `0..records_count`.
    #[error("records_count {count} does not match last_offset_delta {last_offset_delta}")]
    RecordCount {
        /// Declared number of records.
        count: i32,
        /// Declared last offset delta.
        last_offset_delta: i32,
    },
    /// A record inside the batch is malformed.
    #[error("malformed record #{index}: {reason}")]
    MalformedRecord {
        /// Position of the record in the batch.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More bytes than one batch were given where exactly one was expected.
    #[error("{0} unexpected bytes after the batch")]
    ExtraBytes(usize),
    /// The encoder refused the records.
    #[error("cannot encode batch: {0}")]
    Encode(String),
}

/// A parsed batch header. Offsets and lengths are checked to be non-negative by [`BatchHeader::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes after the length field.
    pub batch_length: u32,
    /// Raft term of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Raw attribute bits.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record (ms since the epoch).
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Kafka producer id (-1: none).
    pub producer_id: i64,
    /// Number of records.
    pub records_count: u32,
    /// Stored CRC-32C.
    pub crc: u32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn non_negative(field: &'static str, value: i64) -> Result<u64, BatchError> {
    u64::try_from(value).map_err(|_| BatchError::BadField { field, value })
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `buf` and sanity-checks its fields. Does not
    /// check that the whole batch is present or its CRC; see [`check_batch`].
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[16] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        let base_offset = non_negative("base_offset", be_i64(buf, 0))?;
        let batch_length = non_negative("batch_length", be_i32(buf, 8).into())?;
        if batch_length < (BATCH_HEADER_LEN - BATCH_OVERHEAD) as u64 {
            return Err(BatchError::BadField {
                field: "batch_length",
                value: batch_length as i64,
            });
        }
        let last_offset_delta = non_negative("last_offset_delta", be_i32(buf, 23).into())?;
        let records_count = non_negative("records_count", be_i32(buf, 57).into())?;
        if base_offset.checked_add(last_offset_delta + 1).is_none()
            || base_offset + last_offset_delta >= i64::MAX as u64
        {
            return Err(BatchError::BadField {
                field: "last_offset_delta",
                value: last_offset_delta as i64,
            });
        }
        Ok(BatchHeader {
            base_offset,
            batch_length: batch_length as u32,
            partition_leader_epoch: be_i32(buf, 12),
            crc: be_i32(buf, 17) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: last_offset_delta as u32,
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            records_count: records_count as u32,
        })
    }

    /// Total size of the batch in bytes, including the offset and length fields.
    pub fn total_len(&self) -> usize {
        BATCH_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + self.last_offset_delta as u64
    }

    /// The offset right after this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Control batches carry log metadata (Raft membership, blanks) and are skipped by consumers.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Transactional flag.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Compression codec (0 = none).
    pub fn compression_codec(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }
}

/// CRC-32C over the CRC-covered part of a complete batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Checks one complete batch at the start of `buf`: header, declared length present, CRC.
pub fn check_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let computed = compute_crc(&buf[..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Bytes at the start of a batch that the log rewrites: base offset (0..8), batch length
/// (8..12, unchanged) and partition leader epoch (12..16). None of them is covered by the CRC.
const PATCHED_PREFIX: usize = 16;

/// A batch that passed every check the log needs before it may be appended: framing, CRC, no
/// compression or transactions, `records_count` records with offset deltas `0..records_count`,
/// and every record well-formed. Only constructible through [`ValidatedBatch::new`].
///
/// The batch bytes are shared, never copied: the log writes its own 16-byte prefix (with the
/// assigned base offset and leader epoch) followed by the rest of the original buffer, so a
/// request buffer received from the network goes to the file with a single copy, the kernel's.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    /// The batch as received (exactly one batch).
    bytes: Bytes,
    /// The first 16 bytes with the assigned base offset and leader epoch.
    prefix: [u8; PATCHED_PREFIX],
    /// Its parsed header (with the assigned values).
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Validates `bytes` as exactly one producer batch of at most `max_batch_bytes`.
    pub fn new(bytes: impl Into<Bytes>, max_batch_bytes: usize) -> Result<Self, super::LogError> {
        let bytes = bytes.into();
        if bytes.len() > max_batch_bytes {
            return Err(super::LogError::RecordTooLarge {
                size: bytes.len(),
                max_bytes: max_batch_bytes,
            });
        }
        let header = check_batch(&bytes)?;
        if bytes.len() != header.total_len() {
            return Err(BatchError::ExtraBytes(bytes.len() - header.total_len()).into());
        }
        if header.compression_codec() != 0 {
            return Err(BatchError::Compressed(header.compression_codec()).into());
        }
        if header.is_transactional() {
            return Err(BatchError::Transactional.into());
        }
        if header.records_count == 0 || header.last_offset_delta + 1 != header.records_count {
            return Err(BatchError::RecordCount {
                count: header.records_count as i32,
                last_offset_delta: header.last_offset_delta as i32,
            }
            .into());
        }
        for (index, record) in RecordIter::new(header, bytes.slice(BATCH_HEADER_LEN..)).enumerate()
        {
            let record = record?;
            if record.offset != header.base_offset + index as u64 {
                return Err(BatchError::MalformedRecord {
                    index,
                    reason: "offset deltas must be 0, 1, 2, ... in a producer batch",
                }
                .into());
            }
        }
        let mut prefix = [0u8; PATCHED_PREFIX];
        prefix.copy_from_slice(&bytes[..PATCHED_PREFIX]);
        Ok(ValidatedBatch {
            bytes,
            prefix,
            header,
        })
    }

    /// The parsed header (with the base offset and leader epoch the log assigned, once appended).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a validated batch holds at least one record.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Its records (already validated; no second CRC pass, no copy).
    pub fn records(&self) -> RecordIter {
        RecordIter::new(self.header, self.bytes.slice(BATCH_HEADER_LEN..))
    }

    /// The batch as it is written: the patched prefix, then the rest of the original bytes.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.prefix, &self.bytes[PATCHED_PREFIX..]]
    }

    /// The original bytes (without the prefix the log patches: base offset and leader epoch
    /// are assigned when it is appended).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The batch as it is written, in one buffer (copies; for tests and tools).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        for part in self.parts() {
            out.extend_from_slice(part);
        }
        out.freeze()
    }

    /// Wraps a batch that was already checked (read back from the log, which verified its CRC,
    /// or validated by [`ValidatedBatch::new`] earlier): only the header is parsed.
    pub fn from_checked(bytes: Bytes) -> Result<Self, super::LogError> {
        let header = BatchHeader::parse(&bytes)?;
        if bytes.len() < header.total_len() {
            return Err(BatchError::Truncated {
                needed: header.total_len(),
                available: bytes.len(),
            }
            .into());
        }
        if bytes.len() > header.total_len() {
            return Err(BatchError::ExtraBytes(bytes.len() - header.total_len()).into());
        }
        let mut prefix = [0u8; PATCHED_PREFIX];
        prefix.copy_from_slice(&bytes[..PATCHED_PREFIX]);
        Ok(ValidatedBatch {
            bytes,
            prefix,
            header,
        })
    }

    /// Stores the Raft log index of the entry this batch is in the `producer_id` field and
    /// recomputes the CRC (which covers that field). A no-op if it is already there; copies the
    /// batch only if its buffer is shared.
    pub fn stamp_raft_index(&mut self, index: u64) {
        if self.header.producer_id == index as i64 {
            return;
        }
        let mut bytes = BytesMut::from(std::mem::take(&mut self.bytes));
        bytes[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(index as i64).to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        self.bytes = bytes.freeze();
        self.header.producer_id = index as i64;
        self.header.crc = crc;
    }

    /// Sets the base offset and leader epoch (neither is covered by the CRC).
    pub(crate) fn assign(&mut self, base_offset: u64, leader_epoch: i32) {
        self.prefix[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
        self.prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        self.header.base_offset = base_offset;
        self.header.partition_leader_epoch = leader_epoch;
    }
}

/// A record header (Kafka headers: a string key and optional bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value (`None` is Kafka's null).
    pub value: Option<Bytes>,
}

/// One record read back from the log; key, value and header values share the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset.
    pub offset: u64,
    /// Timestamp in ms since the epoch.
    pub timestamp_ms: i64,
    /// Key (`None` = null).
    pub key: Option<Bytes>,
    /// Value (`None` = null, a tombstone on compacted topics).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<RecordHeader>,
}

/// Reads a zigzag-encoded varint of at most `max_bytes` bytes.
fn read_varint(buf: &mut Bytes, max_bytes: usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

fn read_varint32(buf: &mut Bytes) -> Option<i32> {
    read_varint(buf, 5).and_then(|v| i32::try_from(v).ok())
}

/// Reads a length-prefixed byte field (-1 = null).
fn read_nullable_bytes(buf: &mut Bytes) -> Result<Option<Bytes>, &'static str> {
    match read_varint32(buf).ok_or("bad length varint")? {
        -1 => Ok(None),
        len if len < -1 => Err("negative length"),
        len if len as usize > buf.remaining() => Err("length runs past the record"),
        len => Ok(Some(buf.split_to(len as usize))),
    }
}

/// Iterates the records of one uncompressed batch without copying their payloads.
#[derive(Debug, Clone)]
pub struct RecordIter {
    /// Header of the batch being read.
    header: BatchHeader,
    /// Remaining record bytes.
    buf: Bytes,
    /// Index of the next record.
    index: usize,
    /// Set after the last record or the first error.
    done: bool,
}

impl RecordIter {
    /// Reads `records` (the bytes after the 61-byte header) of the batch with `header`.
    pub fn new(header: BatchHeader, records: Bytes) -> Self {
        RecordIter {
            header,
            buf: records,
            index: 0,
            done: false,
        }
    }

    fn parse_one(&mut self) -> Result<Record, &'static str> {
        let len = read_varint32(&mut self.buf).ok_or("bad record length")?;
        if len < 0 || len as usize > self.buf.remaining() || (len as usize) < MIN_RECORD_LEN - 1 {
            return Err("record length out of bounds");
        }
        let mut rec = self.buf.split_to(len as usize);
        rec.advance(1); // record attributes: unused in v2
        let ts_delta = read_varint(&mut rec, 10).ok_or("bad timestamp delta")?;
        let timestamp_ms = self
            .header
            .base_timestamp
            .checked_add(ts_delta)
            .ok_or("timestamp overflow")?;
        let offset_delta = read_varint32(&mut rec).ok_or("bad offset delta")?;
        if offset_delta < 0 || offset_delta as u32 > self.header.last_offset_delta {
            return Err("offset delta outside the batch");
        }
        let key = read_nullable_bytes(&mut rec)?;
        let value = read_nullable_bytes(&mut rec)?;
        let count = read_varint32(&mut rec).ok_or("bad header count")?;
        // Each header takes at least two bytes: bound the count before allocating.
        if count < 0 || count as usize > rec.remaining() / 2 {
            return Err("header count out of bounds");
        }
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key = read_nullable_bytes(&mut rec)?.ok_or("null header key")?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| "header key is not UTF-8")?;
            let value = read_nullable_bytes(&mut rec)?;
            headers.push(RecordHeader { key, value });
        }
        if rec.has_remaining() {
            return Err("record length does not match its fields");
        }
        Ok(Record {
            offset: self.header.base_offset + offset_delta as u64,
            timestamp_ms,
            key,
            value,
            headers,
        })
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.header.records_count as usize {
            self.done = true;
            if self.buf.has_remaining() {
                return Some(Err(BatchError::MalformedRecord {
                    index: self.index,
                    reason: "bytes after the last record",
                }));
            }
            return None;
        }
        let index = self.index;
        self.index += 1;
        match self.parse_one() {
            Ok(record) => Some(Ok(record)),
            Err(reason) => {
                self.done = true;
                Some(Err(BatchError::MalformedRecord { index, reason }))
            }
        }
    }
}

/// One stored batch: its header and its bytes (a zero-copy slice of a read).
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// Parsed header.
    pub header: BatchHeader,
    /// The whole batch.
    pub bytes: Bytes,
}

impl StoredBatch {
    /// The records of this batch. Fails for compressed batches.
    pub fn records(&self) -> Result<RecordIter, BatchError> {
        if self.header.compression_codec() != 0 {
            return Err(BatchError::Compressed(self.header.compression_codec()));
        }
        if self.header.records_count as usize
            > (self.bytes.len() - BATCH_HEADER_LEN) / MIN_RECORD_LEN
        {
            return Err(BatchError::BadField {
                field: "records_count",
                value: self.header.records_count as i64,
            });
        }
        Ok(RecordIter::new(
            self.header,
            self.bytes.slice(BATCH_HEADER_LEN..),
        ))
    }
}

/// Splits a buffer of consecutive batches (a read result) into checked batches.
/// Yields an error (and stops) at the first batch that fails its checks.
pub fn split_batches(buf: Bytes) -> BatchIter {
    BatchIter { buf, failed: false }
}

/// Iterator returned by [`split_batches`].
#[derive(Debug, Clone)]
pub struct BatchIter {
    /// Bytes not yet split off.
    buf: Bytes,
    /// Set after the first error.
    failed: bool,
}

impl Iterator for BatchIter {
    type Item = Result<StoredBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        match check_batch(&self.buf) {
            Ok(header) => {
                let bytes = self.buf.split_to(header.total_len());
                Some(Ok(StoredBatch { header, bytes }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads every record of every non-control batch in `buf` (consumers' view of a read result),
/// skipping records below `from_offset` (a read starts at the batch containing the offset).
pub fn decode_records(buf: Bytes, from_offset: u64) -> Result<Vec<Record>, BatchError> {
    let mut out = Vec::new();
    for batch in split_batches(buf) {
        let batch = batch?;
        if batch.header.is_control() {
            continue;
        }
        for record in batch.records()? {
            let record = record?;
            if record.offset >= from_offset {
                out.push(record);
            }
        }
    }
    Ok(out)
}

/// A record to be produced (the log assigns its offset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Key (`None` = null).
    pub key: Option<Bytes>,
    /// Value (`None` = null, a tombstone on compacted topics).
    pub value: Option<Bytes>,
    /// Headers in order. Header keys must be distinct (a limit of the encoder).
    pub headers: Vec<RecordHeader>,
    /// Create time in ms since the epoch.
    pub timestamp_ms: i64,
}

/// The payload of one record, borrowed from either a [`NewRecord`] or a stored [`Record`].
struct Payload<'a> {
    timestamp_ms: i64,
    key: &'a Option<Bytes>,
    value: &'a Option<Bytes>,
    headers: &'a [RecordHeader],
}

/// Builds the encoder's record. `delta` is the offset delta within the batch: the encoder keeps
/// records in one batch while `offset - sequence` is constant, so the sequence follows the delta
/// (and the batch's base sequence stays -1, "none").
fn to_kafka(
    offset: i64,
    delta: i32,
    leader_epoch: i32,
    control: bool,
    p: Payload<'_>,
) -> KafkaRecord {
    let mut headers = IndexMap::with_capacity(p.headers.len());
    for h in p.headers {
        headers.insert(StrBytes::from_string(h.key.clone()), h.value.clone());
    }
    KafkaRecord {
        transactional: false,
        control,
        delete_horizon: false,
        partition_leader_epoch: leader_epoch,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: (-1i32).wrapping_add(delta),
        timestamp: p.timestamp_ms,
        key: p.key.clone(),
        value: p.value.clone(),
        headers,
    }
}

fn encode_kafka(records: &[KafkaRecord]) -> Result<BytesMut, BatchError> {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: MAGIC_V2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| BatchError::Encode(e.to_string()))?;
    Ok(buf)
}

/// Encodes `records` as one batch (base offset 0, to be assigned by the log).
pub fn encode_batch(records: &[NewRecord]) -> Result<BytesMut, BatchError> {
    encode_new(records, false)
}

/// Encodes `records` as one control batch (stored by the log, skipped by consumers).
pub fn encode_control_batch(records: &[NewRecord]) -> Result<BytesMut, BatchError> {
    encode_new(records, true)
}

fn encode_new(records: &[NewRecord], control: bool) -> Result<BytesMut, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Encode(
            "a batch needs at least one record".into(),
        ));
    }
    let converted: Vec<KafkaRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let payload = Payload {
                timestamp_ms: r.timestamp_ms,
                key: &r.key,
                value: &r.value,
                headers: &r.headers,
            };
            to_kafka(i as i64, i as i32, 0, control, payload)
        })
        .collect();
    let buf = encode_kafka(&converted)?;
    let header = BatchHeader::parse(&buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchError::Encode("records did not fit one batch".into()));
    }
    Ok(buf)
}

/// Re-encodes surviving records of a stored batch keeping their offsets (used by compaction).
/// The new batch's base offset is the first surviving record's offset.
pub(crate) fn encode_with_offsets(
    records: &[Record],
    leader_epoch: i32,
    control: bool,
) -> Result<BytesMut, BatchError> {
    let Some(first) = records.first() else {
        return Err(BatchError::Encode(
            "a batch needs at least one record".into(),
        ));
    };
    let base = first.offset;
    let converted: Vec<KafkaRecord> = records
        .iter()
        .map(|r| {
            let payload = Payload {
                timestamp_ms: r.timestamp_ms,
                key: &r.key,
                value: &r.value,
                headers: &r.headers,
            };
            to_kafka(
                r.offset as i64,
                (r.offset - base) as i32,
                leader_epoch,
                control,
                payload,
            )
        })
        .collect();
    let buf = encode_kafka(&converted)?;
    let header = check_batch(&buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchError::Encode("records did not fit one batch".into()));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &str, ts: i64) -> NewRecord {
        NewRecord {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![RecordHeader {
                key: "h".into(),
                value: Some(Bytes::from_static(b"v")),
            }],
            timestamp_ms: ts,
        }
    }

    #[test]
    fn encode_then_read_back_round_trips() {
        let records = vec![rec("a", "1", 1000), rec("b", "2", 1005), rec("c", "", 999)];
        let buf = encode_batch(&records).unwrap();
        let mut batch = ValidatedBatch::new(buf, 1 << 20).unwrap();
        assert_eq!(batch.header().records_count, 3);
        assert_eq!(batch.header().max_timestamp, 1005);
        batch.assign(42, 7);
        let stored = check_batch(&batch.to_bytes()).unwrap();
        assert_eq!(stored.base_offset, 42);
        assert_eq!(stored.partition_leader_epoch, 7);
        let decoded = decode_records(batch.to_bytes(), 0).unwrap();
        assert_eq!(decoded.len(), 3);
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            assert_eq!(got.offset, 42 + i as u64);
            assert_eq!(got.key, want.key);
            assert_eq!(got.value, want.value);
            assert_eq!(got.timestamp_ms, want.timestamp_ms);
            assert_eq!(got.headers, want.headers);
        }
    }

    #[test]
    fn kafka_protocol_decoder_agrees_with_ours() {
        let records = vec![rec("k", "v", 5), NewRecord::default()];
        let buf = encode_batch(&records).unwrap();
        let mut theirs = Bytes::copy_from_slice(&buf);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut theirs).unwrap();
        let ours = decode_records(buf.freeze(), 0).unwrap();
        assert_eq!(set.records.len(), ours.len());
        for (t, o) in set.records.iter().zip(&ours) {
            assert_eq!(t.offset as u64, o.offset);
            assert_eq!(t.key, o.key);
            assert_eq!(t.value, o.value);
        }
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut buf = encode_batch(&[rec("a", "hello", 1)]).unwrap();
        let last = buf.len() - 2;
        buf[last] ^= 0x40;
        assert!(matches!(
            ValidatedBatch::new(buf, 1 << 20),
            Err(super::super::LogError::InvalidBatch(
                BatchError::CrcMismatch { .. }
            ))
        ));
    }

    #[test]
    fn oversized_batch_is_rejected_with_the_limit() {
        let buf = encode_batch(&[rec("a", &"x".repeat(2000), 1)]).unwrap();
        let len = buf.len();
        match ValidatedBatch::new(buf, 1024) {
            Err(super::super::LogError::RecordTooLarge { size, max_bytes }) => {
                assert_eq!((size, max_bytes), (len, 1024));
            }
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn compacted_batch_keeps_offsets_and_gaps() {
        let records = vec![
            Record {
                offset: 10,
                timestamp_ms: 1,
                key: Some(Bytes::from_static(b"a")),
                value: None,
                headers: vec![],
            },
            Record {
                offset: 14,
                timestamp_ms: 3,
                key: Some(Bytes::from_static(b"b")),
                value: Some(Bytes::from_static(b"x")),
                headers: vec![],
            },
        ];
        let buf = encode_with_offsets(&records, 3, false).unwrap();
        let header = check_batch(&buf).unwrap();
        assert_eq!(header.base_offset, 10);
        assert_eq!(header.last_offset(), 14);
        assert_eq!(header.records_count, 2);
        assert_eq!(header.partition_leader_epoch, 3);
        let back = decode_records(buf.freeze(), 0).unwrap();
        assert_eq!(back, records);
    }
}
