//! Gossip seeds found in the cloud: the private addresses of the running EC2 instances that
//! carry a tag (`join_aws_tag = "KEY=VALUE"`), through the EC2 `DescribeInstances` API.
//!
//! An auto-scaling group tags every instance it launches, so every node finds the others
//! without a fixed seed list, and a replacement node finds the survivors. The instance
//! profile needs `ec2:DescribeInstances` (read-only; it has no resource-level permissions).
//! Credentials and region come from the SDK's standard chain (environment, profile, IMDS).

use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::Filter;

/// Why the seeds could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// `join_aws_tag` is not `KEY=VALUE` with a non-empty key.
    #[error("join_aws_tag {0:?}: expected KEY=VALUE (for example \"logbook-cluster=prod\")")]
    InvalidTag(String),
    /// The EC2 API call failed (network, credentials, permissions, throttling).
    #[error("EC2 DescribeInstances for tag {tag}: {details}")]
    Api {
        /// The `KEY=VALUE` searched for.
        tag: String,
        /// The SDK's error with its causes.
        details: String,
    },
}

/// Where to look for instances and how to reach their gossip.
#[derive(Debug, Clone, Default)]
pub struct Ec2TagDiscovery {
    /// `KEY=VALUE` of the tag every node of the cluster carries.
    pub tag: String,
    /// Region ("": the SDK's chain: `AWS_REGION`, profile, instance metadata).
    pub region: String,
    /// EC2 API endpoint ("": AWS's; set for VPC endpoints or an EC2-compatible server in tests).
    pub endpoint: String,
    /// The gossip port the seeds listen on (every node uses the same one).
    pub gossip_port: u16,
}

/// A connected EC2 seed source.
#[derive(Debug, Clone)]
pub struct Ec2Seeds {
    /// The SDK client.
    client: aws_sdk_ec2::Client,
    /// Tag key and value.
    key: String,
    value: String,
    /// Port appended to every address.
    gossip_port: u16,
}

/// Splits `KEY=VALUE` (trimmed; the key must not be empty, the value may be).
pub fn parse_tag(tag: &str) -> Result<(&str, &str), DiscoveryError> {
    tag.split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| DiscoveryError::InvalidTag(tag.to_string()))
}

impl Ec2TagDiscovery {
    /// Builds the EC2 client (no request is made yet); fails only on a malformed tag.
    pub async fn connect(&self) -> Result<Ec2Seeds, DiscoveryError> {
        let (key, value) = parse_tag(&self.tag)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !self.region.is_empty() {
            loader = loader.region(aws_config::Region::new(self.region.clone()));
        }
        if !self.endpoint.is_empty() {
            loader = loader.endpoint_url(self.endpoint.clone());
        }
        let shared = loader.load().await;
        let timeouts = aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .build();
        let config = aws_sdk_ec2::config::Builder::from(&shared)
            .timeout_config(timeouts)
            .build();
        Ok(Ec2Seeds {
            client: aws_sdk_ec2::Client::from_conf(config),
            key: key.to_string(),
            value: value.to_string(),
            gossip_port: self.gossip_port,
        })
    }
}

impl Ec2Seeds {
    /// The tag searched for, `KEY=VALUE`.
    pub fn tag(&self) -> String {
        format!("{}={}", self.key, self.value)
    }

    /// The private addresses of the pending and running instances with the tag, as
    /// `ip:gossip_port`, sorted, without `exclude` (this node's own address).
    pub async fn seeds(&self, exclude: Option<IpAddr>) -> Result<Vec<String>, DiscoveryError> {
        let api_error = |details: String| DiscoveryError::Api {
            tag: format!("{}={}", self.key, self.value),
            details,
        };
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", self.key))
                    .values(&self.value)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        let mut ips = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error(DisplayErrorContext(&e).to_string()))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(ip) = instance
                    .private_ip_address()
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                if Some(ip) != exclude {
                    ips.push(ip);
                }
            }
        }
        ips.sort();
        ips.dedup();
        Ok(ips
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, self.gossip_port).to_string())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tags_must_be_key_equals_value() {
        for bad in ["", "novalue", "=value", " =x"] {
            let discovery = Ec2TagDiscovery {
                tag: bad.to_string(),
                ..Default::default()
            };
            let err = discovery.connect().await.err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("KEY=VALUE")),
                "{bad:?}: {err:?}"
            );
        }
        let ok = Ec2TagDiscovery {
            tag: "logbook-cluster=prod".to_string(),
            region: "eu-west-1".to_string(),
            gossip_port: 7946,
            ..Default::default()
        };
        let seeds = ok.connect().await.expect("a valid tag");
        assert_eq!(
            (seeds.key.as_str(), seeds.value.as_str()),
            ("logbook-cluster", "prod")
        );
    }
}
