//! The processes of the local control plane that `e2e/controlplane.sh up` started, for the
//! tests that stop them. Another cluster's processes are out of a test's reach.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, ensure};

/// The local control plane's run directory ($KOTEL_E2E_DIR).
pub struct ControlPlane {
    dir: PathBuf,
}

impl ControlPlane {
    /// The local control plane, or why the suite is running against a cluster whose
    /// processes it cannot stop.
    pub fn local() -> Result<Self, String> {
        if std::env::var_os("KOTEL_E2E_KUBECONFIG").is_some() {
            return Err("KOTEL_E2E_KUBECONFIG names a cluster whose etcd and kube-apiserver this suite cannot stop".into());
        }
        let dir = std::env::var_os("KOTEL_E2E_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join(".e2e"));
        if !dir.join("cmds").is_dir() {
            return Err(format!(
                "{} holds no control plane started by e2e/controlplane.sh up",
                dir.display()
            ));
        }
        Ok(ControlPlane { dir })
    }

    /// Stops one process (`etcd`, `kube-apiserver`, ...), keeps it down for `down`, starts it
    /// again with the same command line, and returns once the API server is ready.
    pub async fn restart(&self, name: &str, down: Duration) -> anyhow::Result<()> {
        self.run(&["restart", name, &down.as_secs().to_string()])
            .await
    }

    /// Compacts etcd's history up to its current revision: a watch that resumes from an older
    /// resourceVersion gets 410 Gone.
    pub async fn compact(&self) -> anyhow::Result<()> {
        self.run(&["compact"]).await
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let script = crate::repo_root().join("e2e/controlplane.sh");
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .env("KOTEL_E2E_DIR", &self.dir)
            .output()
            .await
            .with_context(|| format!("running {}", script.display()))?;
        ensure!(
            out.status.success(),
            "e2e/controlplane.sh {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}
