//! Reading the Grafana dashboards in `dashboards/grafana/` the way Grafana would: panels (rows
//! included), their query expressions, the template variables, and the substitution Grafana
//! performs before a query reaches Prometheus. Plus the structural checks an import needs and
//! a PromQL scan for the metric names an expression uses.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The marker that opens the description of an incident panel: one that is empty while the
/// fleet is healthy and shows data only when something is wrong (errors, drops, down nodes).
pub const INCIDENT_MARKER: &str = "Incident panel:";

/// The datasource input every panel and variable must use (no hard-coded uid).
pub const DATASOURCE_INPUT: &str = "DS_PROMETHEUS";

/// `dashboards/` in the repository.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dashboards")
}

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct Target {
    pub panel_id: u64,
    pub panel_title: String,
    pub ref_id: String,
    pub expr: String,
    pub legend: String,
    /// The panel is documented as empty while healthy.
    pub incident: bool,
}

/// One template variable.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub kind: String,
    /// The query (for `query` variables), e.g. `label_values(roost_build_info, fleet)`.
    pub query: String,
    pub include_all: bool,
    pub multi: bool,
}

/// A dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub path: PathBuf,
    pub json: Value,
}

impl Dashboard {
    pub fn load(path: &Path) -> anyhow::Result<Dashboard> {
        let text = std::fs::read_to_string(path)?;
        let json = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
        Ok(Dashboard {
            path: path.to_owned(),
            json,
        })
    }

    pub fn title(&self) -> &str {
        self.json["title"].as_str().unwrap_or("")
    }

    /// Every panel, rows and the panels inside collapsed rows included, in file order.
    pub fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
            for panel in panels.as_array().into_iter().flatten() {
                out.push(panel);
                walk(&panel["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&self.json["panels"], &mut out);
        out
    }

    /// Every query of every panel.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for panel in self.panels() {
            let incident = panel["description"]
                .as_str()
                .is_some_and(|d| d.starts_with(INCIDENT_MARKER));
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(Target {
                    panel_id: panel["id"].as_u64().unwrap_or(0),
                    panel_title: panel["title"].as_str().unwrap_or("").to_owned(),
                    ref_id: target["refId"].as_str().unwrap_or("").to_owned(),
                    expr: target["expr"].as_str().unwrap_or("").to_owned(),
                    legend: target["legendFormat"].as_str().unwrap_or("").to_owned(),
                    incident,
                });
            }
        }
        out
    }

    pub fn variables(&self) -> Vec<Variable> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| Variable {
                name: v["name"].as_str().unwrap_or("").to_owned(),
                kind: v["type"].as_str().unwrap_or("").to_owned(),
                query: match &v["query"] {
                    Value::String(s) => s.clone(),
                    other => other["query"].as_str().unwrap_or("").to_owned(),
                },
                include_all: v["includeAll"].as_bool().unwrap_or(false),
                multi: v["multi"].as_bool().unwrap_or(false),
            })
            .collect()
    }

    /// What Grafana needs to import the file as-is, and what keeps it portable: problems found,
    /// one line each (empty = fine).
    pub fn structure_problems(&self, required_variables: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        let json = &self.json;
        let datasource = format!("${{{DATASOURCE_INPUT}}}");
        // __inputs: the Prometheus datasource input Grafana asks for on import.
        let inputs = json["__inputs"].as_array().cloned().unwrap_or_default();
        if !inputs.iter().any(|i| {
            i["name"] == DATASOURCE_INPUT
                && i["type"] == "datasource"
                && i["pluginId"] == "prometheus"
        }) {
            problems.push(format!(
                "__inputs has no Prometheus datasource input named {DATASOURCE_INPUT}"
            ));
        }
        for key in ["title", "uid"] {
            if json[key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("no {key}"));
            }
        }
        if !json["id"].is_null() {
            problems.push("`id` must be null in an exported dashboard (Grafana assigns it)".into());
        }
        if json["schemaVersion"].as_u64().is_none() {
            problems.push("no schemaVersion".into());
        }
        // Every datasource reference is the input; a uid of a real datasource breaks imports.
        fn datasources<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
            match value {
                Value::Object(map) => {
                    for (key, v) in map {
                        let here = format!("{path}.{key}");
                        if key == "datasource" {
                            out.push((here.clone(), v));
                        }
                        datasources(v, here, out);
                    }
                }
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        datasources(v, format!("{path}[{i}]"), out);
                    }
                }
                _ => {}
            }
        }
        let mut refs = Vec::new();
        datasources(json, String::new(), &mut refs);
        for (path, value) in refs {
            if path.starts_with(".annotations") {
                // Grafana's built-in annotation query uses its own "-- Grafana --" datasource.
                continue;
            }
            let uid = value["uid"].as_str().or(value.as_str());
            if uid != Some(datasource.as_str()) {
                problems.push(format!("{path} is {value}, not the {datasource} input"));
            }
        }
        // Panel ids unique; every panel has a type, a title and a place.
        let mut ids = BTreeSet::new();
        for panel in self.panels() {
            let title = panel["title"].as_str().unwrap_or("");
            match panel["id"].as_u64() {
                Some(id) if !ids.insert(id) => {
                    problems.push(format!("panel id {id} ({title}) is used twice"))
                }
                Some(_) => {}
                None => problems.push(format!("panel `{title}` has no numeric id")),
            }
            if panel["type"].as_str().is_none_or(str::is_empty) || title.is_empty() {
                problems.push(format!("panel {} needs a type and a title", panel["id"]));
            }
            if panel["gridPos"]["w"].as_u64().is_none() || panel["gridPos"]["h"].as_u64().is_none()
            {
                problems.push(format!("panel `{title}` has no gridPos"));
            }
            if panel["type"] != "row" {
                let targets = panel["targets"].as_array().cloned().unwrap_or_default();
                if targets.is_empty() {
                    problems.push(format!("panel `{title}` has no query"));
                }
                let mut refs = BTreeSet::new();
                for t in &targets {
                    if t["expr"].as_str().is_none_or(str::is_empty) {
                        problems.push(format!("panel `{title}` has a target without expr"));
                    }
                    if !refs.insert(t["refId"].as_str().unwrap_or("").to_owned()) {
                        problems.push(format!("panel `{title}` repeats refId {}", t["refId"]));
                    }
                }
                if panel["description"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("panel `{title}` has no description"));
                }
            }
        }
        // Grafana checks on import that the plugins in __requires exist: every panel type used
        // is listed (a missing one imports, then renders as "panel plugin not found").
        let required: BTreeSet<&str> = json["__requires"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|r| r["type"] == "panel")
                    .filter_map(|r| r["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for panel in self.panels() {
            let kind = panel["type"].as_str().unwrap_or("");
            if kind != "row" && !kind.is_empty() && !required.contains(kind) {
                problems.push(format!("panel type `{kind}` is not in __requires"));
            }
        }
        // Panels do not overlap on the 24-column grid (hand edits of the JSON can make them).
        let boxes: Vec<(String, [u64; 4])> = self
            .panels()
            .iter()
            .map(|p| {
                let g = &p["gridPos"];
                let n = |k: &str| g[k].as_u64().unwrap_or(0);
                let title = p["title"].as_str().unwrap_or("").to_owned();
                (title, [n("x"), n("y"), n("w"), n("h")])
            })
            .collect();
        for (i, (a, [ax, ay, aw, ah])) in boxes.iter().enumerate() {
            if ax + aw > 24 {
                problems.push(format!("panel `{a}` is wider than the grid"));
            }
            for (b, [bx, by, bw, bh]) in &boxes[i + 1..] {
                if ax < &(bx + bw) && bx < &(ax + aw) && ay < &(by + bh) && by < &(ay + ah) {
                    problems.push(format!("panels `{a}` and `{b}` overlap"));
                }
            }
        }
        // Variables: the required ones exist, and every `$var` used is defined.
        let variables = self.variables();
        let names: BTreeSet<&str> = variables.iter().map(|v| v.name.as_str()).collect();
        for required in required_variables {
            if !names.contains(required) {
                problems.push(format!("no template variable `{required}`"));
            }
        }
        let mut used: Vec<(String, String)> = Vec::new();
        for target in self.targets() {
            for var in referenced_variables(&target.expr) {
                used.push((format!("panel `{}`", target.panel_title), var));
            }
        }
        for variable in &variables {
            for var in referenced_variables(&variable.query) {
                used.push((format!("variable `{}`", variable.name), var));
            }
        }
        for (place, var) in used {
            if !var.starts_with("__") && !names.contains(var.as_str()) {
                problems.push(format!(
                    "{place} uses ${var}, which is not a template variable"
                ));
            }
        }
        problems
    }
}

/// The variables an expression refers to (`$name`, `${name}`, `${name:format}`, `[[name]]`).
pub fn referenced_variables(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let ident = |start: usize| -> String {
        expr[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            if bytes.get(i + 1) == Some(&b'{') {
                let name = ident(i + 2);
                if !name.is_empty() {
                    out.insert(name);
                }
            } else {
                let name = ident(i + 1);
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else if bytes[i] == b'[' && bytes.get(i + 1) == Some(&b'[') {
            let name = ident(i + 2);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        i += 1;
    }
    out
}

/// Replaces Grafana variables in `expr` with `values` (name -> text), longest names first so
/// `$instance` never eats `$instances`. `$__rate_interval`, `$__interval` and `$__range` are
/// taken from `values` too (keys `__rate_interval`, ...).
pub fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for name in names {
        let value = &values[name];
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("[[{name}]]"), value);
        // `${name:regex}` and friends.
        while let Some(start) = out.find(&format!("${{{name}:")) {
            let Some(end) = out[start..].find('}') else {
                break;
            };
            out.replace_range(start..start + end + 1, value);
        }
        let pattern = format!("${name}");
        let mut result = String::new();
        let mut rest = out.as_str();
        while let Some(pos) = rest.find(&pattern) {
            let after = &rest[pos + pattern.len()..];
            let continues = after
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            result.push_str(&rest[..pos]);
            if continues {
                result.push_str(&pattern);
            } else {
                result.push_str(value);
            }
            rest = after;
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// PromQL words that are not metric names: operators, modifiers and the aggregations (which
/// may be followed by `by (...)` rather than by their parenthesis).
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// The metric names an expression selects (everything that is not a function, keyword, label,
/// duration, number or string). Label matchers (`{...}`), grouping lists (`by (...)`) and range
/// selectors (`[5m]`) are skipped.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` the parenthesised
    // list holds label names.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let quote = c;
            i += 1;
            while i < chars.len() && chars[i] != quote {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '(' && label_list_next {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            label_list_next = false;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // Numbers, including 1e9 and durations such as 5m in offsets.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                label_list_next = true;
                continue;
            }
            if chars.get(j) == Some(&'(') {
                // A function or an aggregation (`sum(`, `rate(`).
                continue;
            }
            if KEYWORDS.contains(&lower.as_str()) {
                continue;
            }
            names.insert(word);
            continue;
        }
        i += 1;
    }
    names
}

/// Metric names in a `/metrics` text (sample names, `# TYPE` lines aside).
pub fn exposed_names(metrics_text: &str) -> BTreeSet<String> {
    metrics_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unlisted_panel_types_and_overlapping_panels() {
        let panel = |id: u64, kind: &str, x: u64, y: u64| {
            serde_json::json!({
                "id": id, "type": kind, "title": format!("p{id}"), "description": "d",
                "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
                "targets": [{"refId": "A", "expr": "up"}],
            })
        };
        let board = |panels: Vec<Value>| Dashboard {
            path: PathBuf::from("x.json"),
            json: serde_json::json!({
                "__requires": [{"type": "panel", "id": "timeseries"}],
                "panels": panels,
            }),
        };
        let problems = |d: &Dashboard| d.structure_problems(&[]);
        let fine = board(vec![
            panel(1, "timeseries", 0, 0),
            panel(2, "timeseries", 12, 0),
        ]);
        assert!(!problems(&fine)
            .iter()
            .any(|p| p.contains("overlap") || p.contains("__requires")));
        let bad = board(vec![panel(1, "timeseries", 0, 0), panel(2, "stat", 6, 4)]);
        let found = problems(&bad);
        assert!(
            found.iter().any(|p| p == "panels `p1` and `p2` overlap"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p == "panel type `stat` is not in __requires"),
            "{found:?}"
        );
    }

    #[test]
    fn finds_metric_names_in_promql() {
        let expr = r#"histogram_quantile(0.99, sum by (le, instance) (rate(roost_store_query_duration_seconds_bucket{fleet=~"$fleet", kind!~"invalid|refused"}[$__rate_interval])))"#;
        assert_eq!(
            metric_names(expr),
            BTreeSet::from(["roost_store_query_duration_seconds_bucket".to_owned()])
        );
        let expr = r#"roost_store_disk_bytes / on (instance) group_left (dc) (roost_store_retention_limit_bytes > 0) or vector(0) and up == 1 unless time() - process_start_time_seconds offset 5m < 1e3"#;
        assert_eq!(
            metric_names(expr),
            BTreeSet::from([
                "roost_store_disk_bytes".to_owned(),
                "roost_store_retention_limit_bytes".to_owned(),
                "up".to_owned(),
                "process_start_time_seconds".to_owned(),
            ])
        );
        assert_eq!(
            metric_names(r#"count by (version) (roost_build_info{instance=~"a|b"})"#),
            BTreeSet::from(["roost_build_info".to_owned()])
        );
    }

    #[test]
    fn substitutes_grafana_variables() {
        let values: BTreeMap<String, String> = [
            ("instance", "store-01"),
            ("instances", "x"),
            ("__rate_interval", "10s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            substitute(
                r#"rate(a{instance=~"$instance",i="${instance}",j="[[instances]]",k="${instance:regex}"}[$__rate_interval])"#,
                &values
            ),
            r#"rate(a{instance=~"store-01",i="store-01",j="x",k="store-01"}[10s])"#
        );
        assert_eq!(
            referenced_variables(r#"a{x="$fleet",y="${dc}",z="[[instance]]"}[$__rate_interval]"#),
            BTreeSet::from(["fleet", "dc", "instance", "__rate_interval"].map(str::to_owned))
        );
    }

    #[test]
    fn lists_exposed_sample_names() {
        let text = "# TYPE a counter\na_total{x=\"1\"} 3\nb 4\n# EOF\n";
        assert_eq!(
            exposed_names(text),
            BTreeSet::from(["a_total".to_owned(), "b".to_owned()])
        );
    }
}
