//! Proptest strategies for the tracker's wire types, in one place: proto's round-trip tests draw
//! from the whole domain ([`Leaves::whole`]), the registry's tests from a small one
//! ([`Leaves::small`], so files, names and peers collide); both build the messages with the same
//! composites here, so a field added to a message is added once.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::ops::Range;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use shoal_proto::tracker::{
    AddressProof, Advertise, FileEntry, Filter, Have, PeerInfo, Progress, RequestBody,
    CONNECT_PADDING,
};
use shoal_proto::{ConnectionId, FileId, IdPrefix};

/// The leaves the composite strategies draw from, and the lengths of their lists.
#[derive(Clone, Debug)]
pub struct Leaves {
    pub file_id: BoxedStrategy<FileId>,
    pub name: BoxedStrategy<String>,
    pub id_prefix: BoxedStrategy<IdPrefix>,
    pub peer_info: BoxedStrategy<PeerInfo>,
    /// File sizes and progress in bytes.
    pub bytes: BoxedStrategy<u64>,
    /// Heartbeat file counts.
    pub files: BoxedStrategy<u32>,
    /// List cursors.
    pub cursor: BoxedStrategy<u32>,
    /// Lengths of an announce's files, a heartbeat's progress and an unregister's ids.
    pub announced: Range<usize>,
    pub progressed: Range<usize>,
    pub unregistered: Range<usize>,
}

impl Leaves {
    /// Every value the types allow (names short enough that a message with a few still fits in
    /// a datagram).
    pub fn whole() -> Leaves {
        Leaves {
            file_id: any::<[u8; 32]>().prop_map(FileId).boxed(),
            name: vec(any::<char>(), 0..24)
                .prop_map(String::from_iter)
                .boxed(),
            id_prefix: "[0-9a-fA-F]{8,64}"
                .prop_map(|s| IdPrefix::parse(&s).expect("8 to 64 hex characters parse"))
                .boxed(),
            peer_info: whole_peer_info().boxed(),
            bytes: any::<u64>().boxed(),
            files: any::<u32>().boxed(),
            cursor: any::<u32>().boxed(),
            announced: 0..6,
            progressed: 0..8,
            unregistered: 0..16,
        }
    }

    /// A small domain, so that requests from several sources meet on the same files, names and
    /// peers: six file ids, names from a few letters (now and then anything, or too long), four
    /// ports, id prefixes that are whatever string a sender put there.
    pub fn small() -> Leaves {
        Leaves {
            file_id: (0u8..6).prop_map(|n| FileId([n; 32])).boxed(),
            name: prop_oneof![4 => "[a-cA-C ]{1,4}", 1 => ".{0,40}", 1 => "x{250,260}"].boxed(),
            // Prefixes from the network are whatever string was sent: built as the decoder would.
            id_prefix: prop_oneof!["[0-9a-fA-F]{8,64}", ".{0,70}"]
                .prop_map(|s| {
                    postcard::from_bytes(&postcard::to_allocvec(&s).unwrap())
                        .expect("a newtype of String")
                })
                .boxed(),
            peer_info: (
                0u16..4,
                option::weighted(0.2, any::<[u8; 4]>().prop_map(IpAddr::from)),
            )
                .prop_map(|(port, ip)| PeerInfo {
                    port,
                    advertise: ip.map(|ip| Advertise { ip, proof: None }),
                })
                .boxed(),
            bytes: (0u64..4).boxed(),
            files: (0u32..6).boxed(),
            cursor: (0u32..12).boxed(),
            announced: 0..5,
            progressed: 0..3,
            unregistered: 0..4,
        }
    }

    pub fn have(&self) -> impl Strategy<Value = Have> {
        prop_oneof![
            Just(Have::Complete),
            self.bytes.clone().prop_map(|bytes| Have::Partial { bytes })
        ]
    }

    pub fn file_entry(&self) -> impl Strategy<Value = FileEntry> {
        (
            self.file_id.clone(),
            self.bytes.clone(),
            self.name.clone(),
            self.have(),
        )
            .prop_map(|(id, size, name, have)| FileEntry {
                id,
                size,
                name,
                have,
            })
    }

    pub fn progress(&self) -> impl Strategy<Value = Progress> {
        (self.file_id.clone(), self.bytes.clone()).prop_map(|(id, bytes)| Progress { id, bytes })
    }

    pub fn filter(&self) -> impl Strategy<Value = Filter> {
        prop_oneof![
            Just(Filter::All),
            self.name.clone().prop_map(Filter::NameContains),
            self.name.clone().prop_map(Filter::NameIs),
            self.id_prefix.clone().prop_map(Filter::IdPrefix),
        ]
    }

    /// Every kind of request.
    pub fn request_body(&self) -> impl Strategy<Value = RequestBody> {
        let peer = || self.peer_info.clone();
        prop_oneof![
            any::<[u8; CONNECT_PADDING]>().prop_map(|padding| RequestBody::Connect { padding }),
            (peer(), vec(self.file_entry(), self.announced.clone()))
                .prop_map(|(peer, files)| RequestBody::Announce { peer, files }),
            (
                peer(),
                self.files.clone(),
                vec(self.progress(), self.progressed.clone())
            )
                .prop_map(|(peer, files, progress)| RequestBody::Heartbeat {
                    peer,
                    files,
                    progress,
                }),
            (
                peer(),
                option::of(vec(self.file_id.clone(), self.unregistered.clone()))
            )
                .prop_map(|(peer, files)| RequestBody::Unregister { peer, files }),
            self.file_id
                .clone()
                .prop_map(|file| RequestBody::GetPeers { file }),
            (self.filter(), self.cursor.clone())
                .prop_map(|(filter, cursor)| RequestBody::List { filter, cursor }),
        ]
    }
}

/// Either family.
pub fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ]
}

/// Flow info and scope id are zero: serde's compact form of `SocketAddrV6` carries only the
/// address and port, so no other value could survive the trip.
pub fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            ip.into(),
            port,
            0,
            0
        ))),
    ]
}

fn whole_peer_info() -> impl Strategy<Value = PeerInfo> {
    let proof = (any::<u16>(), any::<u64>()).prop_map(|(port, conn)| AddressProof {
        port,
        conn: ConnectionId(conn),
    });
    let advertise = (ip(), option::of(proof)).prop_map(|(ip, proof)| Advertise { ip, proof });
    (any::<u16>(), option::of(advertise)).prop_map(|(port, advertise)| PeerInfo { port, advertise })
}
