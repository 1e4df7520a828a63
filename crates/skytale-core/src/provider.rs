//! The openmls provider: RustCrypto for crypto (through [`Crypto`], which keeps decoded
//! verifying keys) and randomness, the keystore's SQLCipher
//! connection for state (through `openmls_sqlite_storage`), and the codec of that state.

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

use crate::crypto::Crypto;

/// First byte of a MessagePack-encoded value. 0xC1 is never used by MessagePack and never
/// starts JSON (nor any UTF-8 text), so a stored value says which codec wrote it.
const MSGPACK_TAG: u8 = 0xC1;

/// State types stored as MessagePack (the last segment of their Rust type name). These are
/// values only (never a lookup key), and the ones written often or large: the message secrets
/// (with every message), the ratchet tree, the key schedule and key material.
const COMPACT_TYPES: &[&str] = &[
    "MessageSecretsStore",
    "TreeSync",
    "GroupContext",
    "GroupEpochSecrets",
    "ResumptionPskStore",
    "MlsGroupJoinConfig",
    "QueuedProposal",
    "LeafNode",
    "KeyPackageBundle",
    "HpkeKeyPair",
    "SignatureKeyPair",
    "PskBundle",
    "ConfirmationTag",
    "InterimTranscriptHash",
];

/// Serde codec of the openmls state in the keystore.
///
/// Values of the types in `COMPACT_TYPES` are written as MessagePack (structs as maps, so
/// fields keep their names) behind a one-byte tag; everything else, lookup keys included, as
/// JSON, as earlier versions wrote everything. Reading accepts both, so a keystore written by an
/// earlier version opens and is converted value by value as it is rewritten. MessagePack makes
/// the per-message state write about a third of JSON's size (JSON spells every key byte as a
/// decimal number) and cheaper to encode and decode.
#[derive(Default)]
pub struct StateCodec;

/// Why a state value could not be encoded or decoded.
#[derive(Debug)]
pub enum StateCodecError {
    /// JSON.
    Json(serde_json::Error),
    /// MessagePack, encoding.
    Encode(rmp_serde::encode::Error),
    /// MessagePack, decoding.
    Decode(rmp_serde::decode::Error),
}

impl std::fmt::Display for StateCodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateCodecError::Json(e) => write!(f, "state (JSON): {e}"),
            StateCodecError::Encode(e) => write!(f, "state (MessagePack encode): {e}"),
            StateCodecError::Decode(e) => write!(f, "state (MessagePack decode): {e}"),
        }
    }
}

impl std::error::Error for StateCodecError {}

/// Whether values of type `T` are written as MessagePack.
fn compact<T: ?Sized>() -> bool {
    let name = std::any::type_name::<T>();
    let name = name.trim_start_matches('&').trim_start_matches('[');
    let base = name.split('<').next().unwrap_or(name).trim_end_matches(']');
    let last = base.rsplit("::").next().unwrap_or(base);
    COMPACT_TYPES.contains(&last)
}

impl Codec for StateCodec {
    type Error = StateCodecError;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        if compact::<T>() {
            let mut out = Vec::with_capacity(256);
            out.push(MSGPACK_TAG);
            let mut ser = rmp_serde::Serializer::new(&mut out)
                .with_struct_map()
                .with_bytes(rmp_serde::config::BytesMode::ForceIterables);
            value.serialize(&mut ser).map_err(StateCodecError::Encode)?;
            Ok(out)
        } else {
            serde_json::to_vec(value).map_err(StateCodecError::Json)
        }
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        match slice.split_first() {
            Some((&MSGPACK_TAG, rest)) => rmp_serde::from_slice(rest).map_err(StateCodecError::Decode),
            _ => serde_json::from_slice(slice).map_err(StateCodecError::Json),
        }
    }
}

/// openmls' storage over the keystore connection with Skytale's codec.
pub type Storage<C> = SqliteStorageProvider<StateCodec, C>;

/// An openmls provider borrowing the keystore connection for one operation.
pub struct Provider<'a> {
    crypto: &'a Crypto,
    storage: Storage<&'a Connection>,
}

impl<'a> Provider<'a> {
    /// Builds a provider over `conn`.
    pub fn new(crypto: &'a Crypto, conn: &'a Connection) -> Self {
        Provider { crypto, storage: SqliteStorageProvider::new(conn) }
    }
}

impl<'a> OpenMlsProvider for Provider<'a> {
    type CryptoProvider = Crypto;
    type RandProvider = RustCrypto;
    type StorageProvider = Storage<&'a Connection>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto.rand()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct LeafNode {
        key: Vec<u8>,
        at: Option<u64>,
    }

    #[test]
    fn compact_types_round_trip_and_json_written_earlier_still_reads() {
        let v = LeafNode { key: (0..=255).collect(), at: Some(7) };
        let packed = StateCodec::to_vec(&v).unwrap();
        assert_eq!(packed[0], MSGPACK_TAG);
        let json = serde_json::to_vec(&v).unwrap();
        assert!(packed.len() * 2 < json.len(), "{} vs {}", packed.len(), json.len());
        assert_eq!(StateCodec::from_slice::<LeafNode>(&packed).unwrap(), v);
        assert_eq!(StateCodec::from_slice::<LeafNode>(&json).unwrap(), v);
        // Lookup keys (and every other type) stay JSON, byte for byte as before.
        assert_eq!(
            StateCodec::to_vec(&"group-id".as_bytes().to_vec()).unwrap(),
            serde_json::to_vec(&b"group-id".to_vec()).unwrap()
        );
        assert!(compact::<&LeafNode>() && compact::<&[LeafNode]>() && !compact::<Vec<u8>>());
        // Garbage is an error, not a panic.
        assert!(StateCodec::from_slice::<LeafNode>(&[MSGPACK_TAG, 0xff, 0x00]).is_err());
    }
}
