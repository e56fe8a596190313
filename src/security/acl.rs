//! Authorization: may a subject (a certificate's common name) produce to, consume from or
//! administer a topic? Decided by a casbin model ([`DEFAULT_MODEL`], `config/acl_model.conf`) and
//! a policy file (`config/acl_policy.csv` is an example).
//!
//! The rules in force live in an [`Acl`], shared as `Arc<Acl>`; [`Acl::spawn_reloader`] re-reads
//! the files when they change and swaps the rules in one step. A file that fails to load leaves
//! the previous rules in force.
//!
//! Policy lines are checked before casbin sees them: casbin silently skips a line of an unknown
//! type and accepts a rule with the wrong number of fields (every later request then fails to
//! evaluate, which here means deny-all). Both are load errors here, naming the file and line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use casbin::{CoreApi, DefaultModel, Enforcer, Model, StringAdapter};
use parking_lot::RwLock;

/// The built-in model (`config/acl_model.conf`), used when no model file is configured.
pub const DEFAULT_MODEL: &str = include_str!("../../config/acl_model.conf");

/// What a subject asks to do on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Append records to a topic.
    Produce,
    /// Read records from a topic.
    Consume,
    /// Create, delete or reconfigure a topic.
    Admin,
}

impl Action {
    /// The action's name in policy files: `produce`, `consume` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors loading the ACL files; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// A file could not be read (or its metadata could not be).
    #[error("cannot read ACL {what} file {}: {source}", path.display())]
    Read {
        /// `model` or `policy`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model does not parse or does not fit logbook's requests (`r = sub, obj, act`).
    #[error("invalid ACL model {origin}: {reason}")]
    Model {
        /// The model file, or "(built-in default model)".
        origin: String,
        /// casbin's complaint.
        reason: String,
    },
    /// A policy line is malformed.
    #[error("ACL policy file {}, line {line}: {reason}", path.display())]
    PolicyLine {
        /// The policy file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// The policy does not load into the model (e.g. a role cycle).
    #[error("ACL policy file {} does not load with model {model}: {reason}", path.display())]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// The model file, or "(built-in default model)".
        model: String,
        /// casbin's complaint.
        reason: String,
    },
}

/// A request the rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject {subject:?} is not allowed to {action} on topic {topic:?}")]
pub struct AclDenied {
    /// Who asked (a certificate's common name).
    pub subject: String,
    /// What it asked to do.
    pub action: Action,
    /// On which topic.
    pub topic: String,
}

/// The (modified time, length) of a file: a change of either triggers a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    /// Last modification time.
    modified: SystemTime,
    /// Length in bytes.
    len: u64,
}

/// Stamps of the files the rules in force were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    /// The model file's (None: the built-in model).
    model: Option<FileStamp>,
    /// The policy file's.
    policy: FileStamp,
}

/// One loaded generation of rules.
struct Rules {
    /// The casbin enforcer holding model and policy.
    enforcer: Enforcer,
    /// The files' stamps taken before they were read.
    stamps: Stamps,
    /// Number of `p` and `g` rules loaded.
    rule_count: usize,
}

/// The ACL rules in force, reloadable; share as `Arc<Acl>`.
pub struct Acl {
    /// The model file; None uses [`DEFAULT_MODEL`].
    model_file: Option<PathBuf>,
    /// The policy file.
    policy_file: PathBuf,
    /// The current rules, swapped whole on reload.
    rules: RwLock<Rules>,
    /// Serializes reloads so two never interleave their reads and swaps.
    reloading: tokio::sync::Mutex<()>,
    /// Reloads so far (decisions cached under an older generation are stale).
    generation: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acl")
            .field("model_file", &self.model_file)
            .field("policy_file", &self.policy_file)
            .field("rule_count", &self.rule_count())
            .finish()
    }
}

impl Acl {
    /// Loads a model (None: [`DEFAULT_MODEL`]) and a policy file.
    pub async fn load(model_file: Option<&Path>, policy_file: &Path) -> Result<Acl, AclError> {
        let rules = read_rules(model_file, policy_file).await?;
        Ok(Acl {
            model_file: model_file.map(Path::to_path_buf),
            policy_file: policy_file.to_path_buf(),
            rules: RwLock::new(rules),
            reloading: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether `subject` may do `action` on `topic`. Anything the rules do not allow is denied,
    /// and so is a request the model fails to evaluate.
    pub fn allows(&self, subject: &str, action: Action, topic: &str) -> bool {
        // casbin's keyMatch slices the topic at a byte index taken from the pattern, which
        // panics inside a multi-byte character; topic names are ASCII ([a-zA-Z0-9._-]) anyway.
        if !topic.is_ascii() {
            return false;
        }
        let rules = self.rules.read();
        match rules.enforcer.enforce((subject, topic, action.as_str())) {
            Ok(allowed) => allowed,
            Err(error) => {
                tracing::warn!(%error, subject, topic, %action, "ACL evaluation failed; denying");
                false
            }
        }
    }

    /// Like [`Acl::allows`], with the refusal as an error naming subject, action and topic.
    pub fn check(&self, subject: &str, action: Action, topic: &str) -> Result<(), AclDenied> {
        if self.allows(subject, action, topic) {
            Ok(())
        } else {
            Err(AclDenied {
                subject: subject.to_string(),
                action,
                topic: topic.to_string(),
            })
        }
    }

    /// Reloads so far: a decision remembered under an older generation must be checked again.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Number of rules (`p` and `g` lines) in force.
    pub fn rule_count(&self) -> usize {
        self.rules.read().rule_count
    }

    /// Re-reads the files if either one's (modified time, length) changed since the rules in force
    /// were read. Returns whether new rules were swapped in; on error the old rules stay.
    pub async fn reload_if_changed(&self) -> Result<bool, AclError> {
        let _reloading = self.reloading.lock().await;
        let now = stamps(self.model_file.as_deref(), &self.policy_file).await?;
        if now == self.rules.read().stamps {
            return Ok(false);
        }
        let rules = read_rules(self.model_file.as_deref(), &self.policy_file).await?;
        *self.rules.write() = rules;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(true)
    }

    /// Spawns a task that calls [`Acl::reload_if_changed`] every `every`: logs each reload (with
    /// the rule count) and each new failure (the old rules stay in force). The task holds only a
    /// weak reference and ends once every other owner of the `Arc` is gone.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let acl: Weak<Acl> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; the rules were just loaded.
            ticker.tick().await;
            // The last failure logged, so a file that stays broken is reported once.
            let mut last_error: Option<String> = None;
            loop {
                ticker.tick().await;
                let Some(acl) = acl.upgrade() else { break };
                match acl.reload_if_changed().await {
                    Ok(reloaded) => {
                        if reloaded {
                            crate::telemetry::metrics().acl_reloads.inc();
                            tracing::info!(
                                policy_file = %acl.policy_file.display(),
                                rules = acl.rule_count(),
                                "ACL reloaded"
                            );
                        }
                        last_error = None;
                    }
                    Err(error) => {
                        let message = error.to_string();
                        if last_error.as_deref() != Some(message.as_str()) {
                            tracing::warn!(
                                error = %message,
                                "ACL reload failed; the previous rules stay in force"
                            );
                            last_error = Some(message);
                        }
                    }
                }
            }
        })
    }
}

/// How a model is named in errors.
fn model_origin(model_file: Option<&Path>) -> String {
    match model_file {
        Some(path) => path.display().to_string(),
        None => "(built-in default model)".to_string(),
    }
}

/// The stamps of both files.
async fn stamps(model_file: Option<&Path>, policy_file: &Path) -> Result<Stamps, AclError> {
    let model = match model_file {
        Some(path) => Some(stamp("model", path).await?),
        None => None,
    };
    Ok(Stamps {
        model,
        policy: stamp("policy", policy_file).await?,
    })
}

/// The (modified time, length) of one file.
async fn stamp(what: &'static str, path: &Path) -> Result<FileStamp, AclError> {
    let read_err = |source| AclError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(read_err)?;
    Ok(FileStamp {
        modified: meta.modified().map_err(read_err)?,
        len: meta.len(),
    })
}

/// Reads, checks and loads both files. The stamps are taken before reading, so a change made
/// while reading shows as a change on the next check.
async fn read_rules(model_file: Option<&Path>, policy_file: &Path) -> Result<Rules, AclError> {
    let stamps = stamps(model_file, policy_file).await?;
    let origin = model_origin(model_file);
    let model_text = match model_file {
        Some(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|source| AclError::Read {
                what: "model",
                path: path.to_path_buf(),
                source,
            })?,
        None => DEFAULT_MODEL.to_string(),
    };
    let policy_text = tokio::fs::read_to_string(policy_file)
        .await
        .map_err(|source| AclError::Read {
            what: "policy",
            path: policy_file.to_path_buf(),
            source,
        })?;

    let model_err = |reason: String| AclError::Model {
        origin: origin.clone(),
        reason,
    };
    let model = DefaultModel::from_str(&model_text)
        .await
        .map_err(|e| model_err(e.to_string()))?;
    for (sec, what) in [
        ("r", "request_definition"),
        ("p", "policy_definition"),
        ("e", "policy_effect"),
        ("m", "matchers"),
    ] {
        if model.get_model().get(sec).is_none_or(|a| a.is_empty()) {
            return Err(model_err(format!("no [{what}] section")));
        }
    }
    check_policy_lines(&model, policy_file, &policy_text)?;

    // Enforcer::new compiles the matcher (model errors) and builds the role graph (policy errors).
    let enforcer = Enforcer::new(model, StringAdapter::new(policy_text))
        .await
        .map_err(|e| match e {
            casbin::Error::ModelError(_)
            | casbin::Error::RhaiParseError(_)
            | casbin::Error::RhaiError(_) => model_err(e.to_string()),
            _ => AclError::Policy {
                path: policy_file.to_path_buf(),
                model: origin.clone(),
                reason: e.to_string(),
            },
        })?;
    // A model whose matcher fails on every request (an unknown function, a request of another
    // shape than sub, obj, act) would deny everything: refuse it now instead.
    enforcer
        .enforce(("logbook-acl-probe", "logbook-acl-probe", "produce"))
        .map_err(|e| {
            model_err(format!(
                "cannot evaluate a (subject, topic, action) request: {e}"
            ))
        })?;
    let rule_count = ["p", "g"]
        .iter()
        .filter_map(|sec| enforcer.get_model().get_model().get(*sec))
        .flat_map(|assertions| assertions.values())
        .map(|assertion| assertion.get_policy().len())
        .sum();
    Ok(Rules {
        enforcer,
        stamps,
        rule_count,
    })
}

/// Checks every policy line: a policy type the model defines (`p`, `g`, ...), the number of
/// fields that type takes, no empty field, no quotes (casbin's CSV quoting is not supported, so
/// what is checked here is what casbin loads).
fn check_policy_lines(model: &DefaultModel, path: &Path, text: &str) -> Result<(), AclError> {
    let sections = model.get_model();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let refuse = |reason: String| AclError::PolicyLine {
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        };
        if line.contains('"') {
            return Err(refuse("quotes are not supported".to_string()));
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.iter().any(|f| f.is_empty()) {
            return Err(refuse("empty field".to_string()));
        }
        let ptype = fields[0];
        // A p-type lists its fields as tokens; a g-type's value is "_, _" (one "_" per field).
        let expected = ["p", "g"]
            .into_iter()
            .find_map(|sec| Some((sec, sections.get(sec)?.get(ptype)?)))
            .map(|(sec, assertion)| match sec {
                "p" => assertion.tokens.len(),
                _ => assertion.value.split(',').count(),
            });
        let Some(expected) = expected else {
            return Err(refuse(format!(
                "unknown rule type {ptype:?} (expected p or g)"
            )));
        };
        if fields.len() - 1 != expected {
            return Err(refuse(format!(
                "a {ptype} rule takes {expected} fields, found {}",
                fields.len() - 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
# test policy
p, alice, orders, produce
p, analytics, orders.*, consume
p, ops, audit.*, admin
  # an indented comment
p, admin, *, *
p, *, public, consume

g, bob, readers
g, carol, bob
p, readers, logs.*, consume
";

    /// A temporary directory holding a policy file (and optionally a model file).
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new(policy: &str) -> Files {
            let files = Files {
                dir: tempfile::tempdir().unwrap(),
            };
            files.write_policy(policy);
            files
        }
        fn policy(&self) -> PathBuf {
            self.dir.path().join("policy.csv")
        }
        fn model(&self) -> PathBuf {
            self.dir.path().join("model.conf")
        }
        fn write_policy(&self, text: &str) {
            std::fs::write(self.policy(), text).unwrap();
        }
        /// Rewrites the policy with a length that differs from the current one, so the change
        /// shows even when the file system's mtime granularity hides it.
        fn rewrite_policy(&self, text: &str) {
            let old_len = std::fs::metadata(self.policy()).unwrap().len();
            let mut text = text.to_string();
            while text.len() as u64 == old_len {
                text.push_str("# padding\n");
            }
            self.write_policy(&text);
        }
        async fn load(&self) -> Acl {
            Acl::load(None, &self.policy()).await.unwrap()
        }
    }

    use Action::{Admin, Consume, Produce};

    #[tokio::test]
    async fn matrix_of_actions_exact_and_wildcard_topics() {
        let files = Files::new(POLICY);
        let acl = files.load().await;
        // (subject, action, topic, allowed)
        let cases = [
            // Exact topic.
            ("alice", Produce, "orders", true),
            ("alice", Consume, "orders", false),
            ("alice", Admin, "orders", false),
            ("alice", Produce, "orders.eu", false),
            ("alice", Produce, "orders2", false),
            ("analytics", Produce, "orders", false),
            // Wildcard topic: orders.* covers orders.eu, not orders itself.
            ("analytics", Consume, "orders.eu", true),
            ("analytics", Consume, "orders.eu.paris", true),
            ("analytics", Consume, "orders", false),
            ("analytics", Consume, "ordersx", false),
            ("analytics", Produce, "orders.eu", false),
            ("analytics", Admin, "orders.eu", false),
            ("alice", Consume, "orders.eu", false),
            // Admin on a wildcard.
            ("ops", Admin, "audit.2024", true),
            ("ops", Produce, "audit.2024", false),
            ("ops", Consume, "audit.2024", false),
            ("ops", Admin, "orders", false),
            ("alice", Admin, "audit.2024", false),
            // Topic * and action *.
            ("admin", Produce, "anything", true),
            ("admin", Consume, "orders.eu", true),
            ("admin", Admin, "x", true),
            // Non-ASCII topics are denied, not a panic inside keyMatch.
            ("admin", Consume, "orders€", false),
            ("analytics", Consume, "orders.€uro", false),
        ];
        for (subject, action, topic, allowed) in cases {
            assert_eq!(
                acl.allows(subject, action, topic),
                allowed,
                "{subject} {action} {topic}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_subjects_are_denied_and_star_subject_is_anyone() {
        let files = Files::new(POLICY);
        let acl = files.load().await;
        for action in [Produce, Consume, Admin] {
            assert!(!acl.allows("mallory", action, "orders"), "{action}");
            assert!(!acl.allows("", action, "orders"), "{action}");
            // A role name used as a topic or an action is not a grant.
            assert!(!acl.allows("mallory", action, "logs.app"), "{action}");
        }
        // p, *, public, consume: anyone, and only that.
        assert!(acl.allows("mallory", Consume, "public"));
        assert!(acl.allows("node:n1", Consume, "public"));
        assert!(!acl.allows("mallory", Produce, "public"));
        assert!(!acl.allows("mallory", Consume, "public.x"));
        // The subject "*" is not a wildcard when it asks: it gets only what "*" rules grant.
        assert!(!acl.allows("*", Produce, "orders"));
        assert!(acl.allows("*", Consume, "public"));
        let denied = acl.check("mallory", Produce, "orders").unwrap_err();
        assert_eq!(
            denied,
            AclDenied {
                subject: "mallory".to_string(),
                action: Produce,
                topic: "orders".to_string(),
            }
        );
        let message = denied.to_string();
        assert!(
            message.contains("\"mallory\"")
                && message.contains("produce")
                && message.contains("\"orders\""),
            "{message}"
        );
        acl.check("alice", Produce, "orders").unwrap();
    }

    #[tokio::test]
    async fn empty_policy_denies_everything() {
        let files = Files::new("# nothing allowed\n");
        let acl = files.load().await;
        assert_eq!(acl.rule_count(), 0);
        for action in [Produce, Consume, Admin] {
            assert!(!acl.allows("alice", action, "orders"));
        }
    }

    #[tokio::test]
    async fn roles_via_g_and_comments_skipped() {
        let files = Files::new(POLICY);
        let acl = files.load().await;
        // 6 p rules + 2 g rules; the comments are not rules.
        assert_eq!(acl.rule_count(), 8);
        assert!(acl.allows("bob", Consume, "logs.app"));
        assert!(!acl.allows("bob", Produce, "logs.app"));
        assert!(!acl.allows("bob", Consume, "orders"));
        // Roles nest: carol -> bob -> readers.
        assert!(acl.allows("carol", Consume, "logs.app"));
        // The role's own name matches its rules too (g() is true for equal names).
        assert!(acl.allows("readers", Consume, "logs.app"));
        // Grouping goes one way.
        assert!(!acl.allows("readers", Produce, "orders"));
    }

    #[tokio::test]
    async fn shipped_model_and_example_policy_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let acl = Acl::load(
            Some(&root.join("acl_model.conf")),
            &root.join("acl_policy.csv"),
        )
        .await
        .unwrap();
        assert_eq!(acl.rule_count(), 5);
        assert!(acl.allows("alice", Produce, "orders"));
        assert!(acl.allows("analytics", Consume, "orders.eu"));
        assert!(acl.allows("admin", Admin, "anything"));
        assert!(acl.allows("bob", Consume, "logs.app"));
        assert!(!acl.allows("bob", Consume, "orders"));
    }

    #[tokio::test]
    async fn reload_picks_up_a_changed_policy() {
        let files = Files::new(POLICY);
        let acl = files.load().await;
        assert!(!acl.reload_if_changed().await.unwrap(), "nothing changed");
        assert!(!acl.allows("dave", Produce, "orders"));

        files.rewrite_policy("p, dave, orders, produce\n");
        assert!(acl.reload_if_changed().await.unwrap());
        assert!(acl.allows("dave", Produce, "orders"));
        assert!(
            !acl.allows("alice", Produce, "orders"),
            "old rules are gone"
        );
        assert_eq!(acl.rule_count(), 1);
        assert!(!acl.reload_if_changed().await.unwrap(), "already current");
    }

    #[tokio::test]
    async fn broken_policy_on_reload_keeps_the_old_rules() {
        let files = Files::new(POLICY);
        let acl = files.load().await;
        for (broken, expect) in [
            ("p, alice, orders\n", "takes 3 fields"),
            ("p, alice, orders, produce, extra\n", "takes 3 fields"),
            ("q, alice, orders, produce\n", "unknown rule type"),
            ("g, bob\n", "takes 2 fields"),
            ("p, alice, , produce\n", "empty field"),
            ("p, \"alice, bob\", orders, produce\n", "quotes"),
        ] {
            files.rewrite_policy(&format!("p, dave, orders, produce\n{broken}"));
            let err = acl.reload_if_changed().await.unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, AclError::PolicyLine { line: 2, .. }),
                "{broken:?}: {message}"
            );
            assert!(message.contains(expect), "{broken:?}: {message}");
            assert!(message.contains("policy.csv"), "{message}");
            assert!(
                acl.allows("alice", Produce, "orders"),
                "{broken:?}: old rules kept"
            );
            assert!(
                !acl.allows("dave", Produce, "orders"),
                "{broken:?}: new rules not used"
            );
        }
        // A missing file too.
        std::fs::remove_file(files.policy()).unwrap();
        let err = acl.reload_if_changed().await.unwrap_err();
        assert!(
            matches!(err, AclError::Read { what: "policy", .. }),
            "{err}"
        );
        assert!(acl.allows("alice", Produce, "orders"));
        // Fixed: the next check loads it.
        files.write_policy("p, dave, orders, produce\n");
        assert!(acl.reload_if_changed().await.unwrap());
        assert!(acl.allows("dave", Produce, "orders"));
    }

    #[tokio::test]
    async fn broken_model_on_reload_keeps_the_old_rules() {
        let files = Files::new(POLICY);
        std::fs::write(files.model(), DEFAULT_MODEL).unwrap();
        let acl = Acl::load(Some(&files.model()), &files.policy())
            .await
            .unwrap();
        assert!(acl.allows("alice", Produce, "orders"));
        let broken_models = [
            "this is not a model\n".to_string(),
            // An unknown function in the matcher: fails on evaluation only.
            DEFAULT_MODEL.replace("keyMatch(", "noSuchMatch("),
            // A matcher that does not parse.
            DEFAULT_MODEL.replace("keyMatch(r.obj, p.obj)", "keyMatch(r.obj, p.obj"),
            // Requests of another shape.
            DEFAULT_MODEL.replace("r = sub, obj, act", "r = sub, obj"),
            // No matcher at all.
            DEFAULT_MODEL
                .replace("[matchers]", "")
                .replace("m = ", "x = "),
        ];
        for broken in broken_models {
            std::fs::write(
                files.model(),
                format!("{broken}\n# {}\n", "x".repeat(broken.len() % 7)),
            )
            .unwrap();
            let err = acl.reload_if_changed().await.unwrap_err();
            assert!(matches!(err, AclError::Model { .. }), "{broken}: {err}");
            assert!(err.to_string().contains("model.conf"), "{err}");
            assert!(
                acl.allows("alice", Produce, "orders"),
                "{broken}: old rules kept"
            );
        }
        assert!(
            Acl::load(Some(&files.model()), &files.policy())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn load_errors_name_the_file() {
        let files = Files::new("p, alice, orders, produce\nwhat is this\n");
        let err = Acl::load(None, &files.policy()).await.unwrap_err();
        assert!(matches!(err, AclError::PolicyLine { line: 2, .. }), "{err}");
        let missing = files.dir.path().join("missing.csv");
        let err = Acl::load(None, &missing).await.unwrap_err();
        assert!(err.to_string().contains("missing.csv"), "{err}");
    }

    #[tokio::test]
    async fn reloader_applies_changes_and_ends_with_the_acl() {
        let files = Files::new(POLICY);
        let acl = Arc::new(files.load().await);
        let reloader = acl.spawn_reloader(Duration::from_millis(10));
        files.rewrite_policy("p, dave, orders, produce\n");
        // Bounded wait for the reload (not a timing assertion: the bound only stops a hang).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !acl.allows("dave", Produce, "orders") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reloader never reloaded"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(acl);
        tokio::time::timeout(Duration::from_secs(10), reloader)
            .await
            .expect("the reloader outlived its Acl")
            .unwrap();
    }
}
