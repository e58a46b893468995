//! The tables `tests/abi_layout.rs` compares with the C header.

use std::mem::size_of;

use crate::*;

/// Field offsets and sizes of every ABI struct, for the layout test
/// (`tests/abi_layout.rs`). One row per field: `(struct, field, offset,
/// size)`, and one per struct: `(struct, "-", 0, size)`.
pub fn layout_table() -> Vec<(&'static str, &'static str, usize, usize)> {
    use std::mem::offset_of;
    macro_rules! rows {
        ($v:ident; $($t:ident { $($f:ident),* })*) => {
            $(
                $v.push((stringify!($t), "-", 0, size_of::<$t>()));
                $(
                    $v.push((stringify!($t), stringify!($f), offset_of!($t, $f), field_size(|s: &$t| &s.$f)));
                )*
            )*
        };
    }
    fn field_size<S, F>(_f: fn(&S) -> &F) -> usize {
        size_of::<F>()
    }
    let mut v = Vec::new();
    rows!(v;
        PlConfig { magic, abi_version, reserved }
        PlReqHdr { opcode, flags, reserved, ctx, tag }
        PlRespHdr { status, len, tag }
        PlFileId { dev, ino, generation, reserved }
        PlQueryDeviceResp { abi_version, page_size, features, max_contexts, max_mrs, max_pages_per_mr, max_leases, max_children_per_context, max_request_bytes }
        PlCreateContextReq { pid, reserved, comm }
        PlHandleResp { handle }
        PlCloseContextResp { mrs_destroyed, leases_released, pages_unpinned }
        PlCreateChildReq { kind, reserved }
        PlHandleReq { handle }
        PlRegMrReq { access, flags, npages, first_page_offset, length, file, file_offset }
        PlRegMrResp { key, lease }
        PlDmaReq { local_key, local_offset, remote_key, remote_offset, length }
        PlAtomicReq { key, offset, operand, swap }
        PlAtomicResp { original }
        PlPatternReq { key, offset, length, pattern, mode, reserved }
        PlVerifyResp { mismatches, first_bad_offset, first_bad_value }
        PlLeaseTakeReq { file, start, length, policy, owner_pid }
        PlLeaseReleaseReq { lease, reason, reserved }
        PlLeaseBreakReq { file, start, length, reason, reserved }
        PlLeaseBreakResp { leases, leases_held, mrs_revoked, reserved, pages_unpinned }
        PlExportMrResp { export, refs, reserved }
        PlImportMrReq { export, access, reserved }
        PlEvent { kind, flags, dropped, ctx, seq, args }
    );
    v
}

/// Constants shared with the C header, checked by the layout test.
pub fn constant_table() -> Vec<(&'static str, u64)> {
    fn wide<T: TryInto<u64>>(v: T) -> u64 {
        match v.try_into() {
            Ok(v) => v,
            Err(_) => panic!("an ABI constant wider than 64 bits"),
        }
    }
    /// `(C constant, value)` rows, the constant's name from the Rust one.
    macro_rules! wide_named {
        ($($c:ident),* $(,)?) => {
            vec![$((stringify!($c), wide($c))),*]
        };
    }
    let mut v: Vec<(&'static str, u64)> = wide_named![
        PL_MAGIC,
        PL_ABI_VERSION,
        PL_VIRTIO_ID_NATIVE,
        PL_VIRTIO_ID_CARRIER,
        PL_QUEUE_REQUEST,
        PL_QUEUE_EVENT,
        PL_PAGE_SIZE,
        PL_NUM_QUEUES,
        PL_QUEUE_SIZE,
        PL_ACCESS_ALL,
        PL_REG_FLAGS_ALL,
        PL_FEATURES_ALL,
        PL_ACCESS_READ,
        PL_ACCESS_WRITE,
        PL_ACCESS_ATOMIC,
        PL_REG_HAS_FILE,
        PL_REG_LONGTERM,
        PL_REG_SCRUB,
        PL_SCRUB_SEED_MAGIC,
        PL_CHILD_EVENT_CHANNEL,
        PL_CHILD_MR_EXPORT,
        PL_POLICY_REVOKE,
        PL_POLICY_WAIT,
        PL_POLICY_TIMEOUT,
        PL_RELEASE_HOLDER,
        PL_RELEASE_LOST,
        PL_PATTERN_CONST,
        PL_PATTERN_OFFSET_XOR,
        PL_FEATURE_EXPORT,
        PL_FEATURE_LEASES,
        PL_FEATURE_ATOMICS,
        PL_FEATURE_PATTERN,
        PL_EVENT_F_DROPPED,
        PL_MAX_CONTEXTS,
        PL_MAX_MRS,
        PL_MAX_PAGES_PER_MR,
        PL_MAX_LEASES,
        PL_MAX_CHILDREN_PER_CONTEXT,
        PL_MAX_REQUEST_BYTES,
    ];
    v.extend(EVENT_KINDS.iter().map(|&(k, name)| (name, u64::from(k))));
    v.extend(BREAK_REASONS.iter().map(|&(r, name)| (name, u64::from(r))));
    v.extend(REVOKE_REASONS.iter().map(|&(r, name)| (name, r)));
    v.extend(
        FAULT_CLASSES
            .iter()
            .map(|&(c, name, _)| (name, u64::from(c))),
    );
    v.extend(
        FAULT_ACTIONS
            .iter()
            .map(|&(a, name, _)| (name, u64::from(a))),
    );
    for op in Opcode::ALL {
        v.push((op.const_name(), op as u64));
    }
    for s in Status::ALL {
        v.push((s.const_name(), s as u64));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_structs_have_no_implicit_padding() {
        // Sum of field sizes equals the struct size for every struct.
        let table = layout_table();
        let mut structs: Vec<&str> = table.iter().map(|r| r.0).collect();
        structs.dedup();
        for s in structs {
            let total = table.iter().find(|r| r.0 == s && r.1 == "-").unwrap().3;
            let fields: usize = table
                .iter()
                .filter(|r| r.0 == s && r.1 != "-")
                .map(|r| r.3)
                .sum();
            assert_eq!(fields, total, "{s}: fields {fields} bytes, struct {total}");
        }
    }
}
