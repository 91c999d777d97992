//! The shell recipes of README.md and docs/*.md, run as written (only the
//! relay's address is replaced), so that they cannot rot.

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Addr, Relay};

/// README.md and every docs/*.md, the pages recipes may be on.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    let mut pages = vec![root.join("README.md")];
    pages.append(&mut docs);
    pages
}

/// The `<!-- recipe: NAME -->` blocks of README.md and docs/*.md; a name is on
/// one page only, once.
fn recipes() -> HashMap<String, String> {
    let mut found = HashMap::new();
    let mut page_of: HashMap<String, PathBuf> = HashMap::new();
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(name) = line
                .trim()
                .strip_prefix("<!-- recipe: ")
                .and_then(|r| r.strip_suffix(" -->"))
            else {
                continue;
            };
            assert_eq!(
                lines.next().map(str::trim),
                Some("```sh"),
                "recipe {name} must be a ```sh block"
            );
            let code: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            if let Some(first) = page_of.insert(name.to_string(), page.clone()) {
                panic!(
                    "recipe {name} is named twice: in {} and in {}",
                    first.display(),
                    page.display()
                );
            }
            found.insert(name.to_string(), code.join("\n"));
        }
    }
    found
}

struct Shell {
    base: String,
    dir: PathBuf,
    recipes: HashMap<String, String>,
}

impl Shell {
    fn new(relay: &Relay, name: &str) -> Shell {
        let Addr::Tcp(addr) = relay.addr() else {
            panic!("a TCP relay")
        };
        let dir =
            std::env::temp_dir().join(format!("httprelay-readme-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Shell {
            base: format!("http://{addr}"),
            dir,
            recipes: recipes(),
        }
    }

    fn script(&self, recipe: &str) -> String {
        let code = self
            .recipes
            .get(recipe)
            .unwrap_or_else(|| panic!("README.md and docs/*.md have no recipe {recipe}"));
        assert!(
            code.contains("http://localhost:8080"),
            "recipe {recipe} talks to the relay"
        );
        code.replace("http://localhost:8080", &self.base)
    }

    fn command(&self, recipe: &str, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(self.script(recipe))
            .current_dir(&self.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Runs a recipe to completion (at most 20 s).
    fn run(&self, recipe: &str, env: &[(&str, &str)]) -> Output {
        let child = self.command(recipe, env).spawn().expect("bash");
        finish(child, Duration::from_secs(20), recipe)
    }

    /// Starts a recipe that runs until `stop`, in a process group of its own.
    fn spawn(&self, recipe: &str, env: &[(&str, &str)]) -> Child {
        self.command(recipe, env)
            .process_group(0)
            .spawn()
            .expect("bash")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("recipe {what} did not finish in {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stop(mut child: Child) -> String {
    // The loops run until stopped; kill the shell's whole process group at once,
    // so that no curl it starts in the meantime outlives it holding its output.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "recipe {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_pattern(path: &Path, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    fs::write(path, &data).unwrap();
    data
}

#[test]
fn readme_recipe_file_transfer() {
    let relay = Relay::start();
    let sh = Shell::new(&relay, "file");
    let sent = write_pattern(&sh.path("file.bin"), 3 * 1024 * 1024 + 7);
    ok(&sh.run("file", &[]), "file");
    assert!(
        fs::read(sh.path("received.bin")).unwrap() == sent,
        "received.bin differs from file.bin"
    );
}

#[test]
fn readme_recipe_pipe() {
    let relay = Relay::start();
    let sh = Shell::new(&relay, "pipe");
    fs::create_dir_all(sh.path("somedir/sub")).unwrap();
    let a = write_pattern(&sh.path("somedir/a.bin"), 200_000);
    fs::write(sh.path("somedir/sub/note.txt"), "piped through the relay\n").unwrap();
    ok(&sh.run("pipe", &[]), "pipe");
    assert!(fs::read(sh.path("restored/a.bin")).unwrap() == a);
    assert_eq!(
        fs::read_to_string(sh.path("restored/sub/note.txt")).unwrap(),
        "piped through the relay\n"
    );
}

#[test]
fn readme_recipe_chat() {
    let relay = Relay::start();
    let sh = Shell::new(&relay, "chat");
    let follower = sh.spawn("chat-follow", &[]);
    thread::sleep(Duration::from_millis(300));
    for user in ["ann", "bob", "cid"] {
        ok(&sh.run("chat-post", &[("USER", user)]), "chat-post");
    }
    // Give the follower time to fetch the last message.
    thread::sleep(Duration::from_millis(500));
    let seen = stop(follower);
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["ann: hello", "bob: hello", "cid: hello"],
        "{seen}"
    );
}

#[test]
fn readme_recipe_sync_handshake() {
    let relay = Relay::start();
    let sh = Shell::new(&relay, "sync");
    // Two "machines": `hostname` is replaced by a function naming each side.
    let side = |name: &str| {
        let mut cmd = Command::new("bash");
        let script = format!("hostname() {{ echo {name}; }}\n{}", sh.script("sync"));
        cmd.arg("-c")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let a = side("machine-a");
    thread::sleep(Duration::from_millis(200));
    let b = side("machine-b");
    let a = finish(a, Duration::from_secs(20), "sync a");
    let b = finish(b, Duration::from_secs(20), "sync b");
    assert_eq!(ok(&a, "sync").trim(), "machine-b");
    assert_eq!(ok(&b, "sync").trim(), "machine-a");
}

#[test]
fn readme_recipe_proxy_api_from_a_shell_loop() {
    let relay = Relay::start();
    let sh = Shell::new(&relay, "proxy");
    let server = sh.spawn("proxy-serve", &[]);
    thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let answer = ok(&sh.run("proxy-client", &[]), "proxy-client");
        let (time, path) = answer.trim().split_once(' ').unwrap_or(("", ""));
        assert_eq!(path, "/now", "{answer:?}");
        assert!(time.len() == 20 && time.ends_with('Z'), "{answer:?}");
    }
    stop(server);
}
