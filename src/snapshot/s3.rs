//! The S3 backend of the snapshot store (`aws-sdk-s3`): any S3-protocol server, with the
//! standard AWS credential chain, a region, an optional custom endpoint and path-style
//! addressing. Objects live under `<prefix>/` in one bucket; large files go up in parts.

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::store::{ObjectInfo, SnapshotStore, StoreError, TMP_MARK, validate_key};

/// Files larger than this are uploaded in parts of this size (S3 allows at most 10,000 parts
/// of at least 5 MiB, so objects up to about 80 GiB).
pub const PART_BYTES: u64 = 8 << 20;
/// Parts of one multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Where the S3 store is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` ("" for none).
    pub prefix: String,
    /// Region ("" for the credential chain's, or `us-east-1`).
    pub region: String,
    /// Custom endpoint URL for S3-compatible servers ("" for AWS).
    pub endpoint: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub force_path_style: bool,
}

impl S3Location {
    /// Parses `s3://bucket/prefix` (the prefix may be empty or have several parts).
    pub fn parse(url: &str) -> Result<S3Location, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            validate_key(&prefix).map_err(|e| e.to_string())?;
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
            ..S3Location::default()
        })
    }
}

/// A snapshot store in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// `prefix/` or "".
    prefix: String,
}

impl S3Store {
    /// Connects with the standard AWS credential chain (environment, profile, web identity,
    /// container and instance metadata). Nothing is sent until the first request.
    pub async fn connect(location: &S3Location) -> S3Store {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !location.region.is_empty() {
            loader = loader.region(aws_config::Region::new(location.region.clone()));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        Self::with_builder(location, builder)
    }

    /// Connects with fixed credentials (tests, and servers without a credential chain).
    pub fn with_credentials(location: &S3Location, access_key: &str, secret: &str) -> S3Store {
        let region = if location.region.is_empty() {
            "us-east-1".to_string()
        } else {
            location.region.clone()
        };
        let builder = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key, secret, None, None, "logbook",
            ));
        Self::with_builder(location, builder)
    }

    fn with_builder(location: &S3Location, mut builder: aws_sdk_s3::config::Builder) -> S3Store {
        if !location.endpoint.is_empty() {
            builder = builder.endpoint_url(location.endpoint.clone());
        }
        // A stalled connection must not hang an install or the snapshot task: reads give up
        // after 30 s without data (the SDK's retries and ours take over).
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .read_timeout(std::time::Duration::from_secs(30))
            .build();
        let config = builder
            .force_path_style(location.force_path_style)
            .timeout_config(timeouts)
            .build();
        S3Store {
            client: Client::from_conf(config),
            bucket: location.bucket.clone(),
            prefix: if location.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", location.prefix)
            },
        }
    }

    /// Starts a GET of `key` (the body streams from the returned output).
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key)?)
            .send()
            .await
            .map_err(|e| sdk_error("get", key, e))
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    async fn put_parts(
        &self,
        key: &str,
        full: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let uploaded = self.upload_parts(key, full, path, size, &upload_id).await;
        let parts = match uploaded {
            Ok(parts) => parts,
            Err(e) => {
                // Best effort: an abandoned upload is also cleaned up by a bucket lifecycle rule.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(e);
            }
        };
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        Ok(())
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        use futures_util::stream::{StreamExt, TryStreamExt};
        let count = size.div_ceil(PART_BYTES);
        let mut parts: Vec<CompletedPart> = futures_util::stream::iter(0..count)
            .map(|i| async move {
                let offset = i * PART_BYTES;
                let length = PART_BYTES.min(size - offset);
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| StoreError::Io {
                        key: key.to_string(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                let number = (i + 1) as i32;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| sdk_error("put", key, e))?;
                Ok::<_, StoreError>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                )
            })
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }
}

/// Maps an SDK error: missing objects, refusals (4xx) and unavailability (everything else).
fn sdk_error<E>(operation: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let message = DisplayErrorContext(&e).to_string();
    let key = key.to_string();
    match &e {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("").to_string();
            if code == "NoSuchKey" || code == "NotFound" || status == Some(404) && code.is_empty() {
                return StoreError::NotFound { key };
            }
            // Throttling and timeouts are 4xx too, but retrying them helps.
            let transient = matches!(
                code.as_str(),
                "RequestTimeout" | "SlowDown" | "Throttling" | "RequestTimeTooSkewed"
            ) || matches!(status, Some(408 | 429));
            if !transient && status.is_some_and(|s| (400..500).contains(&s)) {
                return StoreError::Refused {
                    operation,
                    key,
                    code: if code.is_empty() {
                        format!("HTTP {}", status.unwrap_or_default())
                    } else {
                        code
                    },
                    message: service.err().message().unwrap_or(&message).to_string(),
                };
            }
            StoreError::Unavailable {
                operation,
                key,
                message,
            }
        }
        _ => StoreError::Unavailable {
            operation,
            key,
            message,
        },
    }
}

/// A failure while reading an object's body: a checksum mismatch (the SDK checks the
/// checksum the server stored) or a broken connection.
fn body_error(key: &str, e: &(dyn std::error::Error + 'static)) -> StoreError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    if message.to_ascii_lowercase().contains("checksum") {
        StoreError::Checksum {
            key: key.to_string(),
            message,
        }
    } else {
        StoreError::Unavailable {
            operation: "get",
            key: key.to_string(),
            message,
        }
    }
}

#[tonic::async_trait]
impl SnapshotStore for S3Store {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        Ok(())
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let full = self.full_key(key)?;
        let io = |source| StoreError::Io {
            key: key.to_string(),
            source,
        };
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        if size > PART_BYTES {
            self.put_parts(key, &full, path, size).await?;
            return Ok(size);
        }
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(body)
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        Ok(size)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let object = self.get_object(key).await?;
        let data = object
            .body
            .collect()
            .await
            .map_err(|e| body_error(key, &e))?;
        Ok(data.into_bytes())
    }

    async fn get_to_file(&self, key: &str, target: &Path) -> Result<u64, StoreError> {
        let io = |source| StoreError::Io {
            key: key.to_string(),
            source,
        };
        let mut object = self.get_object(key).await?;
        let dir = target
            .parent()
            .ok_or_else(|| io(std::io::Error::other("a target path has no parent")))?;
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_MARK)
            .tempfile_in(dir)
            .map_err(io)?;
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(io)?);
        let mut size = 0u64;
        while let Some(chunk) = object
            .body
            .try_next()
            .await
            .map_err(|e| body_error(key, &e))?
        {
            file.write_all(&chunk).await.map_err(io)?;
            size += chunk.len() as u64;
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        drop(file);
        let (target, dir) = (target.to_path_buf(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            tmp.persist(&target).map_err(|e| e.error)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| io(std::io::Error::other(e.to_string())))?
        .map_err(io)?;
        Ok(size)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("list", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                if validate_key(key).is_ok() {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match sdk_error("delete", key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
