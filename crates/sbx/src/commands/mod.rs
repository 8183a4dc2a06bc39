//! One module per subcommand.

pub mod exec;
pub mod files;
pub mod mcp;
pub mod run;
pub mod session;
pub mod template;

use std::path::PathBuf;

use anyhow::{bail, Context};
use sandbox_api::Language;

/// The code to run and its language, from `-c CODE` or a file (language from its extension).
pub struct Source {
    pub code: String,
    pub language: Language,
}

#[derive(clap::Args)]
pub struct SourceArgs {
    /// Language: python, node or bash (default: from the file's extension).
    #[arg(short, long, value_parser = parse_language)]
    pub language: Option<Language>,
    /// Code to run.
    #[arg(short, long, conflicts_with = "file")]
    pub code: Option<String>,
    /// File whose contents to run; `-` reads standard input.
    pub file: Option<PathBuf>,
    /// Wall-clock timeout in seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
}

/// What a session runs with (for `session create`, and as a template's defaults).
#[derive(clap::Args)]
pub struct SessionSettings {
    #[arg(long)]
    pub memory_mb: Option<u64>,
    #[arg(long)]
    pub pids: Option<u32>,
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Default per-execution timeout, seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Stop the sandbox after this many seconds without use (the workspace stays).
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Stop the sandbox this many seconds after it started.
    #[arg(long)]
    pub max_lifetime: Option<u64>,
    /// Environment variable for every execution, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

impl SessionSettings {
    pub fn limits(&self) -> sandbox_api::LimitsRequest {
        sandbox_api::LimitsRequest { memory_mb: self.memory_mb, pids: self.pids, cpu: self.cpu }
    }

    pub fn env(&self) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        self.env
            .iter()
            .map(|p| {
                let (k, v) = p.split_once('=').with_context(|| format!("--env {p:?} is not KEY=VALUE"))?;
                Ok((k.to_string(), v.to_string()))
            })
            .collect()
    }
}

fn parse_language(s: &str) -> Result<Language, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown language {s:?} (python, node, bash)"))
}

impl SourceArgs {
    pub fn source(&self) -> anyhow::Result<Source> {
        let (code, guessed) = match (&self.code, &self.file) {
            (Some(code), _) => (code.clone(), None),
            (None, Some(path)) if path.as_os_str() == "-" => (std::io::read_to_string(std::io::stdin())?, None),
            (None, Some(path)) => {
                let code = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                (code, Language::from_extension(ext))
            }
            (None, None) => bail!("give code with -c CODE or a file"),
        };
        let Some(language) = self.language.or(guessed) else {
            bail!("cannot tell the language; pass -l python|node|bash");
        };
        Ok(Source { code, language })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_split_on_the_first_equals() {
        let with = |env: &[&str]| SessionSettings {
            memory_mb: None,
            pids: None,
            cpu: None,
            timeout: None,
            idle_timeout: None,
            max_lifetime: None,
            env: env.iter().map(|s| s.to_string()).collect(),
        };
        let env = with(&["A=1", "B=x=y"]).env().expect("valid");
        assert_eq!(env["B"], "x=y");
        assert!(with(&["nope"]).env().is_err());
    }
}
