//! `towerscope`: the SDK's command line (feature `cli`).
//!
//! ```text
//! towerscope rules --openapi FILE --prefix harbor_core_ [--objective 0.999] [--latency 0.5]
//!                  [--quantile 0.99] [--group-by operation|tag] [--durations summary|histogram|native]
//! ```
//!
//! `rules` writes Prometheus recording and alerting rules for the operations of an OpenAPI
//! document to stdout (see `towerscope::rules`); a summary of what it wrote goes to stderr.
//! Bad arguments exit with status 2 and a message, a document that cannot be read with 1.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use towerscope::rules::{self, Durations, GroupBy, RulesOptions};

const USAGE: &str = "usage: towerscope rules --openapi FILE --prefix PREFIX [--objective 0.999] \
[--latency 0.5] [--quantile 0.99] [--group-by operation|tag] [--durations summary|histogram|native]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("rules") => match parse_rules(&args[1..]) {
            Ok((path, options)) => rules_command(&path, &options),
            Err(message) => usage_error(&message),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("a command is required"),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("towerscope: {message}\n{USAGE}");
    ExitCode::from(2)
}

fn parse_rules(args: &[String]) -> Result<(PathBuf, RulesOptions), String> {
    let mut openapi = None;
    let mut prefix = None;
    let mut options = RulesOptions::new("");
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |text: String| {
            text.parse::<f64>()
                .map_err(|_| format!("{name} {text:?} is not a number"))
        };
        match name {
            "--openapi" => openapi = Some(PathBuf::from(value()?)),
            "--prefix" => prefix = Some(value()?),
            "--objective" => options.objective = number(value()?)?,
            "--latency" => options.latency = number(value()?)?,
            "--quantile" => options.quantile = number(value()?)?,
            "--group-by" => {
                options.group_by = match value()?.as_str() {
                    "operation" => GroupBy::Operation,
                    "tag" => GroupBy::Tag,
                    other => return Err(format!("--group-by {other:?}: operation or tag")),
                }
            }
            "--durations" => {
                options.durations = match value()?.as_str() {
                    "summary" => Durations::Summary,
                    "histogram" => Durations::Histogram,
                    "native" => Durations::Native,
                    other => {
                        return Err(format!(
                            "--durations {other:?}: summary, histogram or native"
                        ))
                    }
                }
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    options.prefix = prefix.ok_or("--prefix is required (\"\" for none)")?;
    Ok((openapi.ok_or("--openapi is required")?, options))
}

fn rules_command(path: &Path, options: &RulesOptions) -> ExitCode {
    let generated = rules::read_document(path)
        .and_then(|document| rules::operations(&document))
        .and_then(|ops| rules::generate(&ops, options));
    match generated {
        Ok(rules) => {
            print!("{}", rules.text);
            eprintln!(
                "towerscope rules: {} {}, {} recording rules, {} alerts{}",
                rules.subjects,
                match options.group_by {
                    GroupBy::Operation => "operations",
                    GroupBy::Tag => "tags",
                },
                rules.recording,
                rules.alerts,
                if rules.left_out > 0 {
                    format!(", {} untagged operations left out", rules.left_out)
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
        Err(rules::RulesError::Invalid(message)) => usage_error(&message),
        Err(err) => {
            eprintln!("towerscope rules: {err}");
            ExitCode::FAILURE
        }
    }
}
