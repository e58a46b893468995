//! The MR steps: REG_MR (every field's problems, and the lease it reports),
//! DEREG_MR, EXPORT_MR (an export child and its references) and IMPORT_MR
//! (an alias of its source's pages, revoked with it).

use pinlease_abi::*;

use super::model::{Child, Lease, LeaseState, Mr};
use super::step::file;
use super::{Harness, LIMITS, MAX_LIST, PAGE};
use crate::input::Input;

impl Harness {
    pub(super) fn reg_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let access = Self::pick_access(input);
        let sel = input.u8();
        let mut flags = u32::from(sel & 7);
        if sel & 0x80 != 0 {
            flags |= 1 << (input.u8() % 32);
        }
        let sel = input.u8();
        let off = match sel & 3 {
            0 => 0,
            1 => u64::from(input.u16() % 4096),
            2 => u64::from(sel >> 2) * 8,
            _ => u64::from(input.u32()),
        };
        let sel = input.u8();
        let length = match sel & 3 {
            0 => 1 + u64::from(input.u16()) % (6 * PAGE),
            1 => PAGE * u64::from(sel >> 2 & 7) + u64::from(sel >> 5),
            2 => Self::pick_num(input, PAGE),
            _ => input.u64(),
        };
        let needed = off
            .checked_add(length)
            .map(|s| s.div_ceil(PAGE))
            .unwrap_or(u64::MAX);
        let sel = input.u8();
        let npages = match sel {
            0..=0xef => needed,
            0xf0..=0xf7 => needed.wrapping_add(1),
            _ => needed.wrapping_sub(1),
        }
        .min(MAX_LIST);
        let pages: Vec<u64> = (0..npages).map(|_| Self::page(input)).collect();
        let (file_id, file_offset) = if flags & PL_REG_HAS_FILE != 0 || input.u8() >= 0xf8 {
            let f = file(input.u8());
            let sel = input.u8();
            let fo = match sel & 3 {
                0 => 0,
                1 | 2 => u64::from(sel >> 2) * PAGE,
                _ => input.u64(),
            };
            (f, fo)
        } else {
            (PlFileId::default(), 0)
        };

        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if access == 0 || access & !PL_ACCESS_ALL != 0 {
            errs.push(Status::Inval);
        }
        if flags & !PL_REG_FLAGS_ALL != 0 {
            errs.push(Status::Inval);
        }
        if flags & PL_REG_SCRUB != 0 && access & PL_ACCESS_WRITE == 0 {
            errs.push(Status::Inval);
        }
        if npages == 0 || off >= PAGE || length == 0 {
            errs.push(Status::Inval);
        }
        if npages > u64::from(LIMITS.max_pages_per_mr) {
            errs.push(Status::TooBig);
        }
        match off.checked_add(length) {
            None => errs.extend([Status::Range, Status::Inval]),
            Some(_) if needed != npages => errs.push(Status::Inval),
            Some(_) => {}
        }
        if pages.iter().any(|g| g % PAGE != 0) {
            errs.push(Status::Inval);
        }
        if pages.iter().any(|&g| g % PAGE == 0 && !self.mapped(g)) {
            errs.push(Status::Fault);
        }
        let has_file = flags & PL_REG_HAS_FILE != 0;
        if !has_file && (file_id != PlFileId::default() || file_offset != 0) {
            errs.push(Status::Inval);
        }
        if has_file && file_offset.checked_add(length).is_none() {
            errs.push(Status::Range);
        }
        if self.mr_count() >= LIMITS.max_mrs as usize {
            errs.push(Status::NoMem);
        }
        let req = PlRegMrReq {
            access,
            flags,
            npages: npages as u32,
            first_page_offset: off as u32,
            length,
            file: file_id,
            file_offset,
        };
        let mut body = req.as_bytes().to_vec();
        for p in &pages {
            body.extend(p.to_le_bytes());
        }
        let Some(resp) = self.expect(Opcode::RegMr, c, &body, &errs) else {
            return;
        };
        let resp = PlRegMrResp::read_from(&resp).unwrap();
        assert!(resp.key != 0 && !self.mrs.iter().any(|m| m.key == resp.key));
        let file = has_file.then_some((file_id, file_offset));
        // The lease REG_MR reports: the holder's ACTIVE lease on the file
        // containing the MR's whole file range, if there is one.
        let covering = |l: &Lease| {
            !l.gone
                && l.holder == c
                && l.state == LeaseState::Active
                && file.is_some_and(|(f, fo)| {
                    l.file == f && l.start <= fo && fo.saturating_add(length) <= l.end
                })
        };
        if resp.lease == 0 {
            assert!(
                !self.leases.iter().any(covering),
                "{}: REG_MR under no lease, yet a covering lease exists",
                self.step
            );
        } else {
            assert!(
                self.leases
                    .iter()
                    .any(|l| l.handle == resp.lease && covering(l)),
                "{}: REG_MR reported lease {:#x}, which does not cover it",
                self.step,
                resp.lease
            );
        }
        self.mrs.push(Mr {
            key: resp.key,
            ctx: c,
            access,
            first_page_offset: off,
            length,
            pages,
            own: true,
            source: None,
            file,
            live: true,
            gone: false,
        });
    }

    pub(super) fn dereg_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        let mi = self.mr(key, &mut errs);
        if let Some(i) = mi {
            if self.mrs[i].ctx != c {
                errs.push(Status::Perm);
            }
        }
        let req = PlHandleReq { handle: key };
        if self
            .expect(Opcode::DeregMr, c, req.as_bytes(), &errs)
            .is_some()
        {
            self.destroy(mi.expect("OK only for a live key"));
        }
    }

    pub(super) fn export_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let mut errs = Vec::new();
        let open = self.open_ctx(c, &mut errs).is_some();
        let mi = self.mr(key, &mut errs);
        let existing = self
            .children
            .iter()
            .position(|ch| !ch.gone && ch.export_of == Some(key));
        if let Some(i) = mi {
            if self.mrs[i].ctx != c {
                errs.push(Status::Perm);
            }
            if !self.mrs[i].live {
                errs.push(Status::Canceled);
            }
        }
        if open
            && existing.is_none()
            && self.live_children(c) >= LIMITS.max_children_per_context as usize
        {
            errs.push(Status::NoMem);
        }
        let req = PlHandleReq { handle: key };
        let Some(resp) = self.expect(Opcode::ExportMr, c, req.as_bytes(), &errs) else {
            return;
        };
        let got = PlExportMrResp::read_from(&resp).unwrap();
        match existing {
            Some(i) => {
                let ch = &mut self.children[i];
                ch.refs += 1;
                assert_eq!((got.export, got.refs), (ch.handle, ch.refs), "re-export");
            }
            None => {
                assert_eq!(got.refs, 1, "{}: a new export's refs", self.step);
                assert!(!self.children.iter().any(|ch| ch.handle == got.export));
                self.children.push(Child {
                    handle: got.export,
                    ctx: c,
                    export_of: Some(key),
                    refs: 1,
                    gone: false,
                });
            }
        }
    }

    pub(super) fn import_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let export = self.pick_child(input);
        let access = Self::pick_access(input);
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        let src = match self.child(export, &mut errs) {
            Some(i) => match self.children[i].export_of {
                None => {
                    errs.push(Status::Inval);
                    None
                }
                Some(key) => self.mrs.iter().position(|m| m.key == key),
            },
            None => None,
        };
        if let Some(s) = src {
            let m = &self.mrs[s];
            if access == 0 || access & !m.access != 0 {
                errs.push(Status::Perm);
            }
            if !m.live {
                errs.push(Status::Canceled);
            }
        }
        if self.mr_count() >= LIMITS.max_mrs as usize {
            errs.push(Status::NoMem);
        }
        let req = PlImportMrReq {
            export,
            access,
            reserved: 0,
        };
        let Some(resp) = self.expect(Opcode::ImportMr, c, req.as_bytes(), &errs) else {
            return;
        };
        let resp = PlRegMrResp::read_from(&resp).unwrap();
        assert_eq!(resp.lease, 0, "{}: IMPORT_MR lease", self.step);
        assert!(resp.key != 0 && !self.mrs.iter().any(|m| m.key == resp.key));
        let s = &self.mrs[src.expect("OK only for a live export")];
        let mr = Mr {
            key: resp.key,
            ctx: c,
            access,
            first_page_offset: s.first_page_offset,
            length: s.length,
            pages: s.pages.clone(),
            own: false,
            source: Some(s.key),
            file: s.file,
            live: true,
            gone: false,
        };
        self.mrs.push(mr);
    }
}
