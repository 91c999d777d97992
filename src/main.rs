use std::process::ExitCode;

use httprelay::config::{self, Command};
use httprelay::reply::VERSION;
use httprelay::server::Server;

fn main() -> ExitCode {
    let command = config::parse(std::env::args_os().skip(1), std::env::var_os("PORT"));
    match command {
        Ok(Command::Help) => {
            print!("{}", config::HELP);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("httprelay {VERSION}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("httprelay: {e} (see --help)");
            ExitCode::from(2)
        }
        Ok(Command::Run(config)) => match Server::bind(&config).and_then(|mut s| s.run()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("httprelay: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
