//! A real Prometheus server for tests: Debian's `prometheus` binary (installed by
//! `scripts/setup --test`), run standalone on 127.0.0.1 with a free port, a temp storage dir,
//! file-based service discovery and short scrape and rule intervals; plus a small client for its
//! HTTP API (instant and range queries, targets, alerts) and `promtool`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;
use tempfile::TempDir;

/// How often the test Prometheus scrapes and evaluates rules.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Where Debian's package puts a binary, else `PATH`.
fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let debian = Path::new("/usr/bin").join(name);
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("`{name}` not found: install Debian's prometheus package (`./scripts/setup --test`)")
        })
}

/// Runs `promtool <args>` and returns (success, stdout + stderr).
pub fn promtool(args: &[&str], cwd: &Path) -> anyhow::Result<(bool, String)> {
    let output = Command::new(tool("promtool")?)
        .args(args)
        .current_dir(cwd)
        .output()
        .context("run promtool")?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

/// A running Prometheus; killed and its storage removed on drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    pub dir: TempDir,
    http: reqwest::Client,
}

/// One series of a query result: its labels and its samples as (unix seconds, value).
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: serde_json::Map<String, Value>,
    pub samples: Vec<(f64, f64)>,
}

impl Series {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

impl Prometheus {
    /// Starts Prometheus scraping the `file_sd` targets in `targets` (e.g. the
    /// `prometheus-targets.json` of `roost-fleet up`) every [`INTERVAL`], with `rules` (alert
    /// rule files) evaluated at the same interval.
    pub async fn start(targets: &Path, rules: &[PathBuf]) -> anyhow::Result<Prometheus> {
        let binary = tool("prometheus")?;
        let dir = tempfile::tempdir()?;
        let rule_files: Vec<String> = rules
            .iter()
            .map(|p| yaml_str(&p.display().to_string()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {i}s\n  scrape_timeout: {i}s\n  evaluation_interval: {i}s\n\
             rule_files: [{rules}]\n\
             scrape_configs:\n  - job_name: roost\n    file_sd_configs:\n      - files: [{targets}]\n        refresh_interval: {i}s\n",
            i = INTERVAL.as_secs(),
            rules = rule_files.join(", "),
            targets = yaml_str(&targets.display().to_string()),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        // A free port: bound and released just before Prometheus binds it. If another process
        // takes it in between, Prometheus exits and we try another one.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let log_path = dir.path().join("prometheus.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let log = std::fs::File::create(&log_path)?;
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("run {}", binary.display()))?;
            let url = format!("http://127.0.0.1:{port}");
            match wait_ready(&mut child, &http, &url).await {
                Ok(()) => {
                    return Ok(Prometheus {
                        child,
                        url,
                        dir,
                        http,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_error = format!("{e:#}; log:\n{log}");
                    if !log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        bail!("Prometheus did not start: {last_error}")
    }

    /// Prometheus's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .form(params)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let body: Value = response
            .json()
            .await
            .context("Prometheus answer is not JSON")?;
        if body["status"] != "success" {
            bail!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("")
            );
        }
        Ok(body["data"].clone())
    }

    /// An instant query at the current time. `Err` if it does not parse or fails.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Series>> {
        let data = self
            .api("/api/v1/query", &[("query", expr.to_owned())])
            .await?;
        Ok(parse_result(&data))
    }

    /// A range query over the last `range`, one point every `step`.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> anyhow::Result<Vec<Series>> {
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_owned()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{}", step.as_secs_f64())),
                ],
            )
            .await?;
        Ok(parse_result(&data))
    }

    /// Label values, as Grafana's `label_values(metric, label)` asks for them.
    pub async fn label_values(&self, label: &str, matcher: &str) -> anyhow::Result<Vec<String>> {
        let response = self
            .http
            .get(format!("{}/api/v1/label/{label}/values", self.url))
            .query(&[("match[]", matcher)])
            .send()
            .await?;
        let body: Value = response.json().await?;
        if body["status"] != "success" {
            bail!("label values of {label} for {matcher}: {body}");
        }
        Ok(body["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The scrape targets' health by `instance` label: `up`, `down` or `unknown`.
    pub async fn targets(&self) -> anyhow::Result<Vec<(String, String)>> {
        let data = self.api_get("/api/v1/targets").await?;
        Ok(data["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        (
                            t["labels"]["instance"].as_str().unwrap_or("").to_owned(),
                            t["health"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Alerts by name with their state (`pending` or `firing`) and labels.
    pub async fn alerts(
        &self,
    ) -> anyhow::Result<Vec<(String, String, serde_json::Map<String, Value>)>> {
        let data = self.api_get("/api/v1/alerts").await?;
        Ok(data["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| {
                        let labels = a["labels"].as_object().cloned().unwrap_or_default();
                        (
                            labels
                                .get("alertname")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            a["state"].as_str().unwrap_or("").to_owned(),
                            labels,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Rule groups as loaded (to check that every rule file loaded and evaluates cleanly).
    pub async fn rules(&self) -> anyhow::Result<Value> {
        self.api_get("/api/v1/rules").await
    }

    async fn api_get(&self, path: &str) -> anyhow::Result<Value> {
        let body: Value = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await?
            .json()
            .await?;
        if body["status"] != "success" {
            bail!("{path}: {body}");
        }
        Ok(body["data"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(child: &mut Child, http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("prometheus exited with {status}");
        }
        if let Ok(r) = http.get(format!("{url}/-/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("prometheus not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn parse_result(data: &Value) -> Vec<Series> {
    let number = |v: &Value| -> f64 {
        match v.as_str() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some(s) => s.parse().unwrap_or(f64::NAN),
            None => f64::NAN,
        }
    };
    let sample =
        |pair: &Value| -> (f64, f64) { (pair[0].as_f64().unwrap_or(0.0), number(&pair[1])) };
    match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => data["result"]
            .as_array()
            .map(|result| {
                result
                    .iter()
                    .map(|s| Series {
                        labels: s["metric"].as_object().cloned().unwrap_or_default(),
                        samples: match s.get("values") {
                            Some(values) => values
                                .as_array()
                                .map(|v| v.iter().map(sample).collect())
                                .unwrap_or_default(),
                            None => vec![sample(&s["value"])],
                        },
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Some("scalar") => vec![Series {
            labels: Default::default(),
            samples: vec![sample(&data["result"])],
        }],
        _ => Vec::new(),
    }
}
