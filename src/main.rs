use std::process::ExitCode;

use std::io::{Read, Write};
use std::time::Duration;

use httprelay::budget::{self, machine::Machine, Budget, Source};
use httprelay::config::{self, Command, Config, Listen};
use httprelay::server::Server;
use httprelay::server::VERSION;

fn main() -> ExitCode {
    let command = config::parse(std::env::args_os().skip(1), std::env::var_os("PORT"));
    match command {
        Ok(Command::Help) => {
            print!("{}", config::HELP);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            // Which build this is: the release artifacts and images differ
            // by it.
            let build = if cfg!(feature = "tls") { " (tls)" } else { "" };
            println!("httprelay {VERSION}{build}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("httprelay: {e} (see --help)");
            ExitCode::from(2)
        }
        Ok(Command::HealthCheck(config)) => match health_check(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("httprelay: health check failed: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Command::Run(mut config)) => {
            let Some(budget) = fit_budget(&mut config) else {
                return ExitCode::from(2);
            };
            match Server::bind_with_budget(&config, budget).and_then(|mut s| s.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("httprelay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Derives the limits not given from the budget (`--memory`, else read from
/// the machine), says so, and returns the budget. `None` when the limits
/// given pass an explicit `--memory`: the relay does not start. Past a budget
/// read from the machine, it starts with a warning: the flags are the
/// operator's word.
fn fit_budget(config: &mut Config) -> Option<Budget> {
    let budget = match config.memory {
        Some(bytes) => Budget::flag(bytes),
        None => {
            let machine = Machine::read();
            Budget::for_machine(machine.cgroup_limit, machine.mem_total)
        }
    };
    let fit = budget::fit(config, budget);
    if let Err(over) = fit.check(config) {
        if budget.source == Source::Flag {
            eprintln!("httprelay: {over}; see docs/memory.md");
            return None;
        }
        eprintln!("httprelay: warning: {over}");
    }
    eprintln!("httprelay: {}", fit.startup_line(config));
    Some(budget)
}

/// `GET /health` from the relay at the configured address; Ok if it says 200.
fn health_check(config: &Config) -> std::io::Result<()> {
    const REQUEST: &[u8] = b"GET /health HTTP/1.0\r\n\r\n";
    let timeout = Some(Duration::from_secs(5));
    let mut answer = Vec::new();
    match &config.listen {
        Listen::Tcp { addr, port } => {
            // A wildcard bind address is reached on loopback.
            let host = match addr.as_str() {
                "0.0.0.0" => "127.0.0.1",
                "::" => "::1",
                other => other,
            };
            let target = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&target)?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?;
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(timeout)?;
            stream.write_all(REQUEST)?;
            stream.take(4096).read_to_end(&mut answer)?;
        }
        Listen::Unix(path) => {
            let mut stream = std::os::unix::net::UnixStream::connect(path)?;
            stream.set_read_timeout(timeout)?;
            stream.write_all(REQUEST)?;
            stream.take(4096).read_to_end(&mut answer)?;
        }
    }
    if answer.starts_with(b"HTTP/1.1 200 ") {
        Ok(())
    } else {
        let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
        Err(std::io::Error::other(format!(
            "answer: {:?}",
            String::from_utf8_lossy(line)
        )))
    }
}
