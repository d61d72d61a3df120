//! The users file (standalone nodes) and the immutable [`Users`] snapshot
//! shards read. The file holds SCRAM credentials only, never a password:
//! `{"users":[{"name","role","topics","salt","iterations","stored_key","server_key"}]}`
//! with the binary fields in base64.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::acl::{Principal, Role, TopicPattern};
use super::scram::{StoredCredential, MAX_ITERATIONS, MAX_USERNAME_BYTES, MIN_ITERATIONS};

/// Largest users file read, in bytes (a file of many thousand users fits).
pub const MAX_USERS_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why the users file or a change to the users failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("users file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("users file {path} is accessible by group or others (mode {mode:03o}): its keys allow offline password guessing; run chmod 600 on it")]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("users file {path} is {bytes} bytes, more than {MAX_USERS_FILE_BYTES}")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("users file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("user `{name}`: {reason}")]
    BadUser { name: String, reason: String },
    #[error("user `{0}` exists already")]
    Exists(String),
    #[error("no user `{0}`")]
    Unknown(String),
    #[error("the users cannot be changed now: {0}")]
    Unavailable(String),
}

/// A user: who it is to the authorizer, and how it proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub principal: Principal,
    pub credential: StoredCredential,
}

/// One entry of the users file (and the body of `POST /api/users` with a
/// credential made by the client, so the password never leaves it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub topics: TopicPattern,
    /// Base64.
    pub salt: String,
    pub iterations: u32,
    /// Base64 of 32 bytes.
    pub stored_key: String,
    /// Base64 of 32 bytes.
    pub server_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<UserRecord>,
}

/// Whether `name` may be a username: 1..=255 bytes of letters, digits and
/// `._@-`, so SASLprep leaves it unchanged and it never needs quoting.
pub fn check_username(name: &str) -> Result<(), UsersError> {
    let allowed = |character: char| character.is_ascii_alphanumeric() || "._@-".contains(character);
    if name.is_empty() || name.len() > MAX_USERNAME_BYTES || !name.chars().all(allowed) {
        let reason = format!("a username is 1 to {MAX_USERNAME_BYTES} letters, digits or `._@-`");
        return Err(UsersError::BadUser { name: name.to_string(), reason });
    }
    Ok(())
}

fn key(name: &str, field: &str, text: &str) -> Result<[u8; 32], UsersError> {
    let bytes = BASE64.decode(text).map_err(|_| bad(name, &format!("{field} is not base64")))?;
    bytes.try_into().map_err(|_| bad(name, &format!("{field} is not 32 bytes")))
}

fn bad(name: &str, reason: &str) -> UsersError {
    UsersError::BadUser { name: name.to_string(), reason: reason.to_string() }
}

impl UserRecord {
    /// The user this entry describes, checked like a users-file entry.
    pub fn into_user(self) -> Result<User, UsersError> {
        check_username(&self.name)?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(bad(&self.name, &format!("iterations must be {MIN_ITERATIONS}..={MAX_ITERATIONS}")));
        }
        let salt = BASE64.decode(&self.salt).map_err(|_| bad(&self.name, "salt is not base64"))?;
        if salt.is_empty() || salt.len() > 128 {
            return Err(bad(&self.name, "salt must be 1 to 128 bytes"));
        }
        let credential = StoredCredential {
            salt,
            iterations: self.iterations,
            stored_key: key(&self.name, "stored_key", &self.stored_key)?,
            server_key: key(&self.name, "server_key", &self.server_key)?,
        };
        Ok(User { principal: Principal { name: self.name, role: self.role, topics: self.topics }, credential })
    }

    /// The entry for `user`.
    pub fn from_user(user: &User) -> UserRecord {
        UserRecord {
            name: user.principal.name.clone(),
            role: user.principal.role,
            topics: user.principal.topics.clone(),
            salt: BASE64.encode(&user.credential.salt),
            iterations: user.credential.iterations,
            stored_key: BASE64.encode(user.credential.stored_key),
            server_key: BASE64.encode(user.credential.server_key),
        }
    }
}

/// An immutable set of users; changes make a new one (published through an
/// `ArcSwap`, so shards read without locks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    by_name: BTreeMap<String, User>,
    /// The node's own admin (its admin API's loopback client): found by
    /// `lookup`, never listed, never saved.
    internal: Option<User>,
}

/// The internal admin's name: `:` is not allowed in user names, so no
/// users-file entry can take it.
pub const INTERNAL_ADMIN: &str = "ringlog:internal-admin";

impl Users {
    /// The user called `name`.
    pub fn lookup(&self, name: &str) -> Option<&User> {
        match &self.internal {
            Some(internal) if name == INTERNAL_ADMIN => Some(internal),
            _ => self.by_name.get(name),
        }
    }

    /// These users and the node's internal admin (replacing an earlier one).
    pub fn with_internal_admin(&self, credential: StoredCredential) -> Users {
        let principal = Principal { name: INTERNAL_ADMIN.to_string(), role: Role::Admin, topics: TopicPattern::Any };
        Users { by_name: self.by_name.clone(), internal: Some(User { principal, credential }) }
    }

    /// Every user, by name.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.by_name.values()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// These users and `user`, which must be new.
    pub fn with_user(&self, user: User) -> Result<Users, UsersError> {
        check_username(&user.principal.name)?;
        if self.by_name.contains_key(&user.principal.name) {
            return Err(UsersError::Exists(user.principal.name));
        }
        let mut next = self.clone();
        next.by_name.insert(user.principal.name.clone(), user);
        Ok(next)
    }

    /// These users with `name`'s role and topics changed (its credential
    /// stays, so its sessions stay and follow the new grant at their next
    /// request).
    pub fn with_grant(&self, name: &str, role: Role, topics: TopicPattern) -> Result<Users, UsersError> {
        let mut next = self.clone();
        let user = next.by_name.get_mut(name).ok_or_else(|| UsersError::Unknown(name.to_string()))?;
        user.principal.role = role;
        user.principal.topics = topics;
        Ok(next)
    }

    /// These users without `name`, which must exist.
    pub fn without_user(&self, name: &str) -> Result<Users, UsersError> {
        let mut next = self.clone();
        next.by_name.remove(name).ok_or_else(|| UsersError::Unknown(name.to_string()))?;
        Ok(next)
    }

    /// The users of a users file's text (`path` names it in errors).
    pub fn parse(text: &[u8], path: &Path) -> Result<Users, UsersError> {
        let invalid = |reason: String| UsersError::Invalid { path: path.to_path_buf(), reason };
        let file: UsersFile = serde_json::from_slice(text).map_err(|error| invalid(error.to_string()))?;
        let mut users = Users::default();
        for record in file.users {
            users = users.with_user(record.into_user()?)?;
        }
        Ok(users)
    }

    /// The users file's text for these users.
    pub fn to_json(&self) -> Vec<u8> {
        let file = UsersFile { users: self.iter().map(UserRecord::from_user).collect() };
        let mut text = serde_json::to_vec_pretty(&file).unwrap_or_default();
        text.push(b'\n');
        text
    }
}

/// A new user with a fresh random salt.
pub fn new_user(principal: Principal, password: &[u8], iterations: u32) -> Result<User, UsersError> {
    check_username(&principal.name)?;
    let io = |source| UsersError::Io { path: PathBuf::from("/dev/urandom"), source };
    let salt = crate::runtime::random::random_bytes(16).map_err(io)?;
    let credential = StoredCredential::derive(password, &salt, iterations)
        .map_err(|error| bad(&principal.name, &error.to_string()))?;
    Ok(User { principal, credential })
}

/// Read the users file at `path`; a missing file is an error (the caller
/// decides whether "no file yet" is fine, see [`load_or_empty`]).
pub fn load(path: &Path) -> Result<Users, UsersError> {
    let io = |source| UsersError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777;
    // Its stored and server keys are password equivalents for an offline
    // attack, so it is kept as private as a TLS key.
    if mode & 0o077 != 0 {
        return Err(UsersError::NotPrivate { path: path.to_path_buf(), mode });
    }
    let bytes = metadata.len();
    if bytes > MAX_USERS_FILE_BYTES {
        return Err(UsersError::TooLarge { path: path.to_path_buf(), bytes });
    }
    let mut text = Vec::with_capacity(bytes as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_USERS_FILE_BYTES + 1), &mut text).map_err(io)?;
    if text.len() as u64 > MAX_USERS_FILE_BYTES {
        return Err(UsersError::TooLarge { path: path.to_path_buf(), bytes: text.len() as u64 });
    }
    Users::parse(&text, path)
}

/// [`load`], with a missing file read as no users (the first `user add`).
pub fn load_or_empty(path: &Path) -> Result<Users, UsersError> {
    match load(path) {
        Err(UsersError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(Users::default()),
        other => other,
    }
}

/// Write `users` to `path` atomically: a temporary file with mode 0600,
/// fsynced, renamed over the old one, then the directory fsynced, so a
/// crash leaves the old file or the new one, never half of one.
pub fn save(path: &Path, users: &Users) -> Result<(), UsersError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| UsersError::Io { path: path.to_path_buf(), source };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| io(std::io::Error::other("the path has no file name")))?;
    let temporary = directory.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary).map_err(io)?;
    file.write_all(&users.to_json()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    std::fs::File::open(&directory).and_then(|directory| directory.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role) -> User {
        let principal = Principal { name: name.into(), role, topics: "orders*".parse().unwrap() };
        new_user(principal, b"secret", 4096).unwrap()
    }

    #[test]
    fn a_users_file_the_group_or_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        save(&path, &Users::default()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load(&path).unwrap_err();
        assert!(matches!(error, UsersError::NotPrivate { mode: 0o644, .. }), "{error}");
        assert!(error.to_string().contains("chmod 600"));
    }

    #[test]
    fn users_survive_a_save_and_load_with_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("users.json");
        let users = Users::default().with_user(user("alice", Role::Admin)).unwrap();
        let users = users.with_user(user("bob", Role::Consumer)).unwrap();
        save(&path, &users).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, users);
        assert!(loaded.lookup("alice").unwrap().credential.verify_password(b"secret"));
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        assert!(!text.contains("secret"), "never a plaintext password");
    }

    #[test]
    fn the_internal_admin_is_found_but_never_listed_or_saved() {
        let credential = StoredCredential::derive(b"random", b"salt", 4096).unwrap();
        let users = Users::default().with_user(user("alice", Role::Consumer)).unwrap().with_internal_admin(credential);
        assert_eq!(users.lookup(INTERNAL_ADMIN).unwrap().principal.role, Role::Admin);
        assert_eq!(users.iter().count(), 1);
        assert!(!String::from_utf8(users.to_json()).unwrap().contains("internal"));
        assert!(users.without_user("alice").unwrap().lookup(INTERNAL_ADMIN).is_some(), "kept across changes");
        assert!(check_username(INTERNAL_ADMIN).is_err());
    }

    #[test]
    fn adding_twice_or_removing_an_unknown_user_is_an_error() {
        let users = Users::default().with_user(user("alice", Role::Admin)).unwrap();
        assert!(matches!(users.with_user(user("alice", Role::Consumer)), Err(UsersError::Exists(_))));
        assert!(matches!(users.without_user("bob"), Err(UsersError::Unknown(_))));
        assert!(users.without_user("alice").unwrap().is_empty());
        assert!(users.lookup("alice").is_some(), "the snapshot itself never changes");
    }

    #[test]
    fn bad_files_and_names_are_refused_with_the_path() {
        let path = Path::new("/etc/ringlog/users.json");
        let error = Users::parse(b"{\"users\":[{\"name\":\"x\"}]}", path).unwrap_err();
        assert!(error.to_string().contains("/etc/ringlog/users.json"), "{error}");
        assert!(Users::parse(b"not json", path).is_err());
        let good =
            String::from_utf8(Users::default().with_user(user("alice", Role::Admin)).unwrap().to_json()).unwrap();
        assert!(Users::parse(good.replace("alice", "al ice").as_bytes(), path).is_err());
        assert!(Users::parse(good.replace("\"iterations\": 4096", "\"iterations\": 1").as_bytes(), path).is_err());
        assert!(check_username("a,b").is_err());
        assert!(check_username(&"a".repeat(256)).is_err());
        assert!(matches!(load(Path::new("/nonexistent/users.json")), Err(UsersError::Io { .. })));
        assert!(load_or_empty(Path::new("/nonexistent/users.json")).unwrap().is_empty());
    }
}
