//! Helm for the tests: the real `helm` oracle ([`crate::helm_tool`]) and a static chart
//! repository (`tests/servers/chart_repo_server.py`: a directory with `index.yaml` and chart
//! archives over HTTP, optionally behind basic auth), as many teams host one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub use crate::helm_tool::{helm, run, try_run};

/// A chart repository served from its own directory; stopped when dropped.
pub struct ChartRepo {
    /// `http://127.0.0.1:PORT/charts`: the repository's URL.
    pub url: String,
    /// Every request answered, as `PATH AUTHORIZATION` lines (`-`: none).
    pub log: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

impl ChartRepo {
    /// A repository anyone may read.
    pub fn start() -> ChartRepo {
        ChartRepo::start_with(None)
    }

    /// A repository behind basic auth with `user:password`, if given.
    pub fn start_with(credentials: Option<&str>) -> ChartRepo {
        crate::git::require("python3", "python3");
        let dir = tempfile::tempdir().expect("a directory");
        std::fs::create_dir_all(dir.path().join("charts")).expect("mkdir");
        let script = crate::repo_root().join("tests/servers/chart_repo_server.py");
        let mut command = Command::new("python3");
        let log = dir.path().join("requests.log");
        command
            .arg(script)
            .arg(dir.path())
            .arg("0")
            .env("CHART_REPO_LOG", &log);
        if let Some(credentials) = credentials {
            command.arg(credentials);
        }
        let (child, address) = crate::spawn_listening(&mut command, "the chart repository");
        ChartRepo {
            url: format!("http://{address}/charts"),
            log,
            dir,
            child,
        }
    }

    /// The directory served as the repository's URL.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("charts")
    }

    /// The requests answered so far, as `PATH AUTHORIZATION` lines.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Writes `index.yaml` as given.
    pub fn write_index(&self, text: &str) {
        std::fs::write(self.dir().join("index.yaml"), text).expect("write index.yaml");
    }

    /// Packages the chart in `chart` with the real helm into the repository and indexes it
    /// again (`helm repo index`, relative URLs).
    pub fn publish(&self, chart: &Path) {
        let dir = self.dir().display().to_string();
        run(
            &["package", &chart.display().to_string(), "-d", &dir],
            chart,
        );
        run(&["repo", "index", &dir], chart);
    }
}

impl Drop for ChartRepo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
