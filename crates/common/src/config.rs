//! Typed settings from the environment, validated once at start-up.

use serde::de::DeserializeOwned;
#[cfg(test)]
use serde::Deserialize;

/// A missing or malformed setting. The message always names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault, such as `KAFKA_BROKERS`.
    pub variable: String,
    /// What is wrong with it (never its value when it is a secret).
    pub reason: String,
}

impl ConfigError {
    /// An error about `variable`.
    pub fn new(variable: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            variable: variable.into(),
            reason: reason.into(),
        }
    }
}

/// Deserializes `T` from environment variables (`FOO_BAR` fills field `foo_bar`), turning
/// envy's errors into [`ConfigError`]s that name the variable.
pub fn from_env<T: DeserializeOwned>() -> Result<T, ConfigError> {
    from_iter(std::env::vars())
}

/// [`from_env`] over explicit pairs, for tests.
pub fn from_iter<T, I>(vars: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    // An empty variable means "not set": `FOO=` in a compose file or a shell is common.
    let vars = vars.into_iter().filter(|(_, v)| !v.trim().is_empty());
    envy::from_iter(vars).map_err(|e| match e {
        envy::Error::MissingValue(field) => ConfigError::new(field.to_uppercase(), "is required"),
        envy::Error::Custom(message) => {
            // envy says "... provided by VARIABLE"; keep the variable, drop the value it
            // quotes, which may be a secret.
            let variable = message
                .rsplit("provided by ")
                .next()
                .filter(|v| message.contains("provided by ") && !v.is_empty())
                .unwrap_or("environment")
                .to_string();
            let reason = message
                .split(" while parsing value")
                .next()
                .unwrap_or("is malformed")
                .to_string();
            ConfigError::new(variable, reason)
        }
    })
}

/// `LOG_FORMAT`. Read as text and parsed with [`LogFormat::parse`], because serde's error
/// for an unknown enum variant can't say which variable held it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line (the default: what log pipelines parse).
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

impl LogFormat {
    /// Parses `LOG_FORMAT` (`json` when unset).
    pub fn parse(value: Option<&str>) -> Result<Self, ConfigError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("json") => Ok(LogFormat::Json),
            Some("pretty") => Ok(LogFormat::Pretty),
            Some(other) => Err(ConfigError::new(
                "LOG_FORMAT",
                format!("`{other}` is not `json` or `pretty`"),
            )),
        }
    }
}

/// The `true` default of boolean settings, for `#[serde(default = "…")]`.
pub fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        port: u16,
        #[serde(default = "default_true")]
        enabled: bool,
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missing_variable_is_named() {
        let err = from_iter::<Sample, _>(vars(&[])).unwrap_err();
        assert_eq!(err.variable, "PORT");
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn malformed_variable_is_named_without_its_value() {
        let err = from_iter::<Sample, _>(vars(&[("PORT", "hunter2")])).unwrap_err();
        assert_eq!(err.variable, "PORT");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = from_iter::<Sample, _>(vars(&[("PORT", "1"), ("ENABLED", "yes")])).unwrap_err();
        assert_eq!(err.variable, "ENABLED");
    }

    #[test]
    fn log_format() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse(Some("Pretty")).unwrap(), LogFormat::Pretty);
        assert_eq!(
            LogFormat::parse(Some("xml")).unwrap_err().variable,
            "LOG_FORMAT"
        );
    }

    #[test]
    fn empty_means_unset() {
        let err = from_iter::<Sample, _>(vars(&[("PORT", " ")])).unwrap_err();
        assert_eq!(err.reason, "is required");
    }
}
