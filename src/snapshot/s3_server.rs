//! A small S3-protocol server over a local directory (`s3s` + `s3s-fs`, SigV4 checked): what
//! `logbook s3-server` runs for laptops, and what tests and benchmarks start in-process. It is
//! a real S3 server reached over HTTP by `aws-sdk-s3`, not a fake of our own client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

/// A running server; stops (closing its connections) when dropped.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    root: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl S3Server {
    /// Serves the directory `root` (each bucket a subdirectory; `buckets` are created) on
    /// `listener`, accepting only requests signed with `access_key` / `secret`.
    pub fn start(
        listener: TcpListener,
        root: &Path,
        buckets: &[&str],
        access_key: &str,
        secret: &str,
    ) -> std::io::Result<S3Server> {
        for bucket in buckets {
            std::fs::create_dir_all(root.join(bucket))?;
        }
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| std::io::Error::other(format!("s3s-fs on {}: {e:?}", root.display())))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret));
        let service = builder.build();
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Connections belong to the server: stopping it (dropping this set) closes them.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                };
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                connections.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(S3Server {
            addr,
            root: root.to_path_buf(),
            task: Some(task),
        })
    }

    /// Binds `addr` and starts (see [`S3Server::start`]).
    pub async fn bind(
        addr: SocketAddr,
        root: &Path,
        buckets: &[&str],
        access_key: &str,
        secret: &str,
    ) -> std::io::Result<S3Server> {
        let listener = TcpListener::bind(addr).await?;
        Self::start(listener, root, buckets, access_key, secret)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint URL (`http://ip:port`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory it serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Waits until the server stops (it only stops when aborted).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
