//! `--name value` command-line flags, without a dependency.

use crate::Error;
use std::collections::BTreeMap;

/// Flags given as `--name value` pairs, checked against the names a subcommand knows.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
}

impl Args {
    /// Parses `--name value` pairs; every name must be in `known`.
    pub fn parse<I, S>(args: I, known: &[&str]) -> Result<Args, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut values = BTreeMap::new();
        let mut it = args.into_iter().map(Into::into);
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| Error::Usage(format!("expected a --flag, got {flag:?}")))?
                .to_string();
            if !known.contains(&name.as_str()) {
                return Err(Error::Usage(format!(
                    "unknown flag --{name} (known: --{})",
                    known.join(", --")
                )));
            }
            let value = it
                .next()
                .ok_or_else(|| Error::Usage(format!("--{name} needs a value")))?;
            values.insert(name, value);
        }
        Ok(Args { values })
    }

    /// The flag's text, or `default` when absent.
    pub fn str_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.values.get(name).map_or(default, String::as_str)
    }

    /// The flag as an unsigned number, or `default` when absent.
    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64, Error> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Error::Usage(format!("--{name} wants a number, got {v:?}"))),
        }
    }

    /// The flag as an unsigned number; it must be present.
    pub fn u64_required(&self, name: &str) -> Result<u64, Error> {
        if !self.values.contains_key(name) {
            return Err(Error::Usage(format!("--{name} is required")));
        }
        self.u64_or(name, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values come back by name; absent ones take the default.
    #[test]
    fn reads_values_and_defaults() {
        let a = Args::parse(["--port", "7000", "--test", "get"], &["port", "test", "x"]).unwrap();
        assert_eq!(a.u64_or("port", 1).unwrap(), 7000);
        assert_eq!(a.str_or("test", "set"), "get");
        assert_eq!(a.u64_or("x", 9).unwrap(), 9);
    }

    // A flag the subcommand does not know is refused, naming it.
    #[test]
    fn unknown_flag_is_refused() {
        let e = Args::parse(["--bogus", "1"], &["port"]).unwrap_err();
        assert!(e.to_string().contains("--bogus"), "{e}");
    }

    // A trailing flag without a value is an error, not silently ignored.
    #[test]
    fn missing_value_is_refused() {
        let e = Args::parse(["--port"], &["port"]).unwrap_err();
        assert!(e.to_string().contains("needs a value"), "{e}");
    }

    // A non-numeric value for a numeric flag is an error naming the flag.
    #[test]
    fn bad_number_is_refused() {
        let a = Args::parse(["--port", "x1"], &["port"]).unwrap();
        let e = a.u64_or("port", 0).unwrap_err();
        assert!(e.to_string().contains("--port"), "{e}");
    }

    // A required flag that is absent is reported.
    #[test]
    fn required_flag_missing() {
        let a = Args::parse(Vec::<String>::new(), &["pid"]).unwrap();
        assert!(a.u64_required("pid").is_err());
    }
}
