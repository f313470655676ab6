//! The command line. The `run` flags are built from the settings table
//! (`refwatch_model::settings::SETTINGS`), so every `REFWATCH_*` setting has
//! a flag and both are validated by the same code.

use clap::{Arg, ArgAction, ArgMatches, Command as Clap};
use refwatch_model::settings::{SettingError, Settings, SETTINGS};
use std::ffi::OsString;
use std::path::PathBuf;

pub enum Command {
    Run(RunOptions),
    Check { file: PathBuf },
}

pub struct RunOptions {
    /// `REFWATCH_*` variables to set, from the flags given.
    pub env: Vec<(&'static str, OsString)>,
    /// Flag values that are not valid: the program then runs unwatched.
    pub invalid: Vec<SettingError>,
    pub fail_on_findings: bool,
    pub command: Vec<OsString>,
}

fn command() -> Clap {
    let mut run = Clap::new("run")
        .about("Run a command with librefwatch.so preloaded; exits with the command's status")
        .arg(
            Arg::new("fail-on-findings")
                .long("fail-on-findings")
                .action(ArgAction::SetTrue)
                .help("Exit 1 when any process of the run reported a finding and the command succeeded"),
        )
        .arg(
            Arg::new("command")
                .num_args(1..)
                .required(true)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString))
                .help("The command to run, after --"),
        );
    for setting in SETTINGS {
        run = run.arg(
            Arg::new(setting.flag)
                .long(setting.flag)
                .value_name(setting.value_name)
                // A path need not be UTF-8: the value goes on as given.
                .value_parser(clap::value_parser!(OsString))
                .help(format!("{} [{}]", setting.help, setting.env)),
        );
    }
    Clap::new("refwatch")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Counts the reference operations of Python C extensions per source line, and finds refcount bugs",
        )
        .subcommand_required(true)
        .subcommand(run)
        .subcommand(
            Clap::new("check")
                .about("Print the findings in a JSON Lines file written by refwatch; exit 1 if there are any")
                .arg(Arg::new("file").required(true).value_parser(clap::value_parser!(PathBuf))),
        )
}

/// Parses the command line; exits with clap's message on a syntax error.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Command {
    from_matches(command().get_matches_from(args))
}

fn from_matches(matches: ArgMatches) -> Command {
    match matches.subcommand() {
        Some(("check", m)) => {
            Command::Check { file: m.get_one::<PathBuf>("file").cloned().unwrap_or_default() }
        }
        Some(("run", m)) => {
            let mut env = Vec::new();
            let mut invalid = Vec::new();
            let mut scratch = Settings::default();
            for setting in SETTINGS {
                if let Some(value) = m.get_one::<OsString>(setting.flag) {
                    match setting.set(&mut scratch, value) {
                        Ok(()) => env.push((setting.env, value.clone())),
                        Err(e) => invalid.push(e),
                    }
                }
            }
            Command::Run(RunOptions {
                env,
                invalid,
                fail_on_findings: m.get_flag("fail-on-findings"),
                command: m.get_many::<OsString>("command").map(|c| c.cloned().collect()).unwrap_or_default(),
            })
        }
        _ => unreachable!("clap requires a subcommand"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_options(args: &[&str]) -> RunOptions {
        let args = std::iter::once("refwatch").chain(args.iter().copied()).map(OsString::from);
        match from_matches(command().try_get_matches_from(args).unwrap()) {
            Command::Run(o) => o,
            Command::Check { .. } => panic!("expected run"),
        }
    }

    #[test]
    fn every_setting_has_a_flag() {
        let run = command().find_subcommand("run").cloned().unwrap();
        for setting in SETTINGS {
            assert!(run.get_arguments().any(|a| a.get_long() == Some(setting.flag)), "{}", setting.flag);
        }
    }

    #[test]
    fn flags_become_variables() {
        let o = run_options(&["run", "--interval", "0.5", "--format", "json", "--", "python", "-c", "pass"]);
        assert_eq!(o.env, vec![("REFWATCH_INTERVAL", "0.5".into()), ("REFWATCH_FORMAT", "json".into())]);
        assert!(o.invalid.is_empty());
        assert_eq!(o.command, ["python", "-c", "pass"].map(OsString::from));
    }

    #[test]
    fn bad_flag_values_are_reported_not_passed() {
        let o = run_options(&["run", "--sample", "0", "--", "true"]);
        assert!(o.env.is_empty());
        assert_eq!(o.invalid.len(), 1);
        assert!(o.invalid[0].to_string().contains("REFWATCH_SAMPLE=\"0\""));
    }

    #[test]
    fn command_args_that_look_like_flags_stay_with_the_command() {
        let o = run_options(&["run", "--", "python", "--interval", "x"]);
        assert!(o.env.is_empty() && o.invalid.is_empty());
        assert_eq!(o.command.len(), 3);
    }
}
