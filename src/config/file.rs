//! Serde mirror of the YAML file (stub).

use super::ConfigError;

#[derive(Debug, Default)]
pub struct FileConfig {}

impl FileConfig {
    pub fn parse(_text: &str) -> Result<FileConfig, ConfigError> {
        Ok(FileConfig::default())
    }
}
