//! Users of a cluster in etcd (`[auth]`, docs/SECURITY.md): one key per
//! user, `PREFIX/users/<name>`, holding its users-file entry (the SCRAM
//! credential, role and topic pattern; never a password). Every node's
//! control thread reads them into the snapshot its shards authenticate
//! against; the admin API of any node adds and removes them.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::etcd::{ClusterError, Etcd};
use super::keys::Keys;
use crate::security::users::UserRecord;
use crate::security::{Role, TopicPattern, User, Users, UsersError};

/// Why a user could not be changed in etcd.
#[derive(Debug, thiserror::Error)]
pub enum ClusterUsersError {
    #[error(transparent)]
    Etcd(#[from] ClusterError),
    #[error(transparent)]
    Users(#[from] UsersError),
}

/// Every user under `PREFIX/users/`. An entry that does not parse is
/// skipped with a warning (one bad key must not lock everyone out).
pub async fn load_users(etcd: &Etcd, keys: &Keys) -> Result<Users, ClusterError> {
    let mut users = Users::default();
    for kv in etcd.get_prefix(&keys.users()).await? {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let parsed = serde_json::from_slice::<UserRecord>(kv.value())
            .map_err(|error| UsersError::BadUser { name: key.clone(), reason: error.to_string() })
            .and_then(UserRecord::into_user)
            .and_then(|user| users.with_user(user));
        match parsed {
            Ok(next) => users = next,
            Err(error) => tracing::warn!(target: "ringlog::auth", %key, %error, "ignoring a bad user entry in etcd"),
        }
    }
    Ok(users)
}

/// Create `user`; `UsersError::Exists` when the name is taken.
pub async fn add_user(etcd: &Etcd, keys: &Keys, user: &User) -> Result<(), ClusterUsersError> {
    crate::security::users::check_username(&user.principal.name)?;
    let key = keys.user(&user.principal.name);
    let value = serde_json::to_string(&UserRecord::from_user(user)).unwrap_or_default();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, None)]);
    if !etcd.txn("add user", txn).await?.succeeded() {
        return Err(UsersError::Exists(user.principal.name.clone()).into());
    }
    Ok(())
}

/// Change `name`'s role and topics, keeping its credential: the entry read
/// is replaced only if nobody changed it in between (a compare on its
/// revision), so a concurrent removal or change is never undone.
pub async fn grant_user(
    etcd: &Etcd,
    keys: &Keys,
    name: &str,
    role: Role,
    topics: TopicPattern,
) -> Result<(), ClusterUsersError> {
    let key = keys.user(name);
    let Some(entry) = etcd.get(&key).await? else { return Err(UsersError::Unknown(name.to_string()).into()) };
    let record: UserRecord = serde_json::from_slice(entry.value())
        .map_err(|error| UsersError::Invalid { path: key.clone().into(), reason: error.to_string() })?;
    let mut user = record.into_user()?;
    user.principal.role = role;
    user.principal.topics = topics;
    let value = serde_json::to_string(&UserRecord::from_user(&user)).unwrap_or_default();
    let txn = Txn::new()
        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, entry.mod_revision())])
        .and_then([TxnOp::put(key, value, None)]);
    if !etcd.txn("grant user", txn).await?.succeeded() {
        return Err(UsersError::Unavailable(format!("user {name} changed meanwhile; try again")).into());
    }
    Ok(())
}

/// Remove the user called `name`; `UsersError::Unknown` when there is none.
pub async fn remove_user(etcd: &Etcd, keys: &Keys, name: &str) -> Result<(), ClusterUsersError> {
    let key = keys.user(name);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Greater, 0)])
        .and_then([TxnOp::delete(key, None)]);
    if !etcd.txn("remove user", txn).await?.succeeded() {
        return Err(UsersError::Unknown(name.to_string()).into());
    }
    Ok(())
}
