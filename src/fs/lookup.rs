//! Names to nodes: what a name in a directory stands for (a folder or
//! secret, a file a view shows, something living in memory) and what a
//! directory lists, from the store's folder listings and secrets (cached)
//! and the namespace.

use crate::fs::OpContext;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::cache::Cached;
use super::handle::DirEntryInfo;
use super::inode::{Ino, NodeKind};
use super::namespace::Name;
use super::view::Placement;
use super::{cache, names, Attr, Child, FileRef, SecretFs, LOCAL_TTL};
use crate::error::{Error, Result};
use crate::store::{ListEntry, Secret, SecretPath};

impl SecretFs {
    /// Whether a listing entry stands for something that shows: a store
    /// may keep listing a secret whose latest version is deleted (KV v2
    /// soft delete). A secret known (fresh in the cache) not to read is
    /// left out; one not read yet is shown until looked up.
    pub(super) fn entry_stands(&self, dir: &SecretPath, e: &ListEntry) -> bool {
        e.folder
            || !matches!(
                self.source.fresh_secret(&dir.join(&e.name)),
                Some(Cached { value: None, .. })
            )
    }

    /// Whether the secret at `path` has a live version (or we may not
    /// know: the store failed). `WouldBlock` when it is not cached and the
    /// caller may not wait.
    pub(super) fn secret_is_live(&self, ctx: &OpContext, path: &SecretPath) -> Result<bool> {
        match self.secret(ctx, path) {
            Ok(Cached { value: None, .. }) => Ok(false),
            Err(Error::WouldBlock) => Err(Error::WouldBlock),
            _ => Ok(true),
        }
    }

    /// Whether the parent's listing names a secret at `path` (whether or
    /// not it reads).
    pub(super) fn listed_as_secret(&self, ctx: &OpContext, path: &SecretPath) -> Result<bool> {
        let Some((parent, name)) = path.split_last() else {
            return Ok(false);
        };
        match self.listing(ctx, &parent) {
            Ok(Cached {
                value: Some(listing),
                ..
            }) => Ok(cache::named(&listing, name).iter().any(|e| !e.folder)),
            Err(Error::WouldBlock) => Err(Error::WouldBlock),
            _ => Ok(false),
        }
    }

    /// Finds `name` in the directory `parent`: a child folder or secret
    /// (directories win over keys), else a key of the secret at `parent`.
    /// Counts one kernel reference on the returned inode.
    pub fn lookup(&self, ctx: &OpContext, parent: Ino, name: &str) -> Result<Attr> {
        let dir = self.dir_path(parent)?;
        if name.len() > names::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if !names::is_showable(name) {
            return Err(Error::NotFound);
        }
        let (child, valid_for) = self.find_child(ctx, &dir, name)?;
        let attr = self.remember(ctx, parent, name, child, valid_for, true);
        self.keep_inodes_bounded();
        attr
    }

    /// Registers a found child in the inode table and returns its attributes.
    pub(super) fn remember(
        &self,
        ctx: &OpContext,
        parent: Ino,
        name: &str,
        child: Child,
        valid_for: Duration,
        lookup: bool,
    ) -> Result<Attr> {
        let at = Name { parent, name };
        match child {
            Child::Dir(path) => {
                let ino = self.names.remember(at, NodeKind::Dir { path }, lookup);
                Ok(self.dir_attr(ino, valid_for))
            }
            Child::Template(name) => {
                let ino =
                    self.names
                        .remember(at, NodeKind::Template { name: name.clone() }, lookup);
                self.template_attr(ctx, ino, &name)
            }
            Child::Scratch(path) => {
                let attr = self.scratch_attr(Ino(0), &path)?;
                let ino = self.names.remember(at, NodeKind::Scratch { path }, lookup);
                Ok(Attr { ino, ..attr })
            }
            Child::NewFile(file) => {
                let ino = self.names.remember(at, file.kind(), lookup);
                let size = self.buffered_size(ino).unwrap_or(0);
                Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO))
            }
            Child::File { file, version } => {
                let writing = self
                    .names
                    .lookup_name(at)
                    .is_some_and(|old| self.buffered_size(old).is_some());
                if !lookup || writing {
                    let ino = self.names.remember(at, file.kind(), lookup);
                    return match self.buffered_size(ino) {
                        Some(size) => {
                            Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO))
                        }
                        None => self.secret_file_attr(ino, &file, &version, valid_for, lookup),
                    };
                }
                // A value that changed outside this mount gets a new inode
                // (the old one keeps serving what it was shown).
                let view = self.views.get(file.view);
                let differs =
                    |old: &Secret| Self::replaces(view, &self.source, &file, &version, old);
                // Its size first: a value that cannot be known now fails
                // before anything is remembered (see `secret_file_attr`).
                view.render(&version, &file.name)
                    .ok_or_else(|| Self::unshown(view, &version, &file.name))?;
                let (ino, dropped) =
                    self.names
                        .remember_shown(at, file.kind(), lookup, version.clone(), &differs);
                if let Some((parent, name)) = dropped {
                    self.drop_entry(ino, parent, name);
                }
                self.secret_file_attr(ino, &file, &version, valid_for, false)
            }
        }
    }

    pub(super) fn find_child(
        &self,
        ctx: &OpContext,
        dir: &SecretPath,
        name: &str,
    ) -> Result<(Child, Duration)> {
        if self.templates.is_some() {
            // Only the templates' files show, at the root.
            return match self.is_template(dir, name)? {
                true => Ok((Child::Template(name.to_string()), self.config.cache.ttl)),
                false => Err(Error::NotFound),
            };
        }
        if dir.version().is_some() {
            return self.find_in_version(ctx, dir, name);
        }
        let child_path = dir.join(name);
        // What lives only in memory comes first, and a directory made
        // with mkdir shows until rmdir, whatever the store holds.
        if self.names.shows_dir(&child_path) {
            return Ok((Child::Dir(child_path), LOCAL_TTL));
        }
        if self.names.scratch(&child_path).is_some() {
            return Ok((Child::Scratch(child_path), LOCAL_TTL));
        }
        if self.names.is_new_file(&child_path) {
            let view = self.view_creating(name);
            if let Some(file) = view.and_then(|v| self.file_ref(dir, v, name)) {
                return Ok((Child::NewFile(file), Duration::ZERO));
            }
        }
        let mut list_denied = None;
        // The listing may say it leaves out names a read reaches (a lower
        // layer refused to list the folder): the name itself is then asked.
        let mut partly_listed = false;
        let mut valid_for = self.config.cache.ttl;
        match self.listing(ctx, dir) {
            Ok(listing) => {
                valid_for = valid_for.min(listing.valid_for);
                let entries = listing.value.iter().flat_map(|l| cache::named(l, name));
                let (mut folder, mut secret) = (false, false);
                for e in entries.filter(|e| self.entry_stands(dir, e)) {
                    folder |= e.folder;
                    secret |= !e.folder;
                }
                // KV v2 keeps listing a soft-deleted secret: a secret-only
                // entry is a directory only if it has a live version. Its
                // GET is needed by the first access below it anyway.
                // Without a view inside secrets, a secret is no directory.
                let secret_dir = secret && self.views.any_inside();
                if folder || (secret_dir && self.secret_is_live(ctx, &child_path)?) {
                    return Ok((Child::Dir(child_path), valid_for));
                }
                partly_listed = listing.value.as_ref().is_some_and(|l| l.partial);
            }
            Err(e @ Error::PermissionDenied(_)) => list_denied = Some(e),
            Err(e) => return Err(e),
        }
        if self.names.is_hidden(&child_path) {
            return Err(Error::NotFound);
        }
        if let Some(found) = self.find_beside(ctx, dir, name)? {
            return Ok(found);
        }
        let secret = match self.secret(ctx, dir) {
            // Neither (wholly) listable nor readable: the child may still
            // be (below).
            Err(Error::PermissionDenied(_)) if list_denied.is_some() || partly_listed => None,
            other => Some(other?),
        };
        // Whether `dir` is itself a secret we read (its keys are known).
        let dir_is_secret = matches!(&secret, Some(Cached { value: Some(_), .. }));
        if let Some(secret) = secret {
            valid_for = valid_for.min(secret.valid_for);
            if let Some(s) = &secret.value {
                if let Some(view) = self.view_showing(s, name) {
                    let file = FileRef {
                        secret: dir.clone(),
                        view,
                        name: name.to_string(),
                    };
                    let version = s.clone();
                    return Ok((Child::File { file, version }, valid_for));
                }
                // A key whose value cannot be known now: its error, at
                // lookup already (see `secret_file_attr`).
                if let Some(e) = self.withheld_inside(s, name) {
                    return Err(e);
                }
            }
        }
        // A token may read secrets without the right to list their folder
        // (a common narrow policy; or, with layers, that of one layer):
        // then ask about the child itself.
        if list_denied.is_some() || partly_listed {
            let as_secret = self.secret(ctx, &child_path);
            if let Ok(Cached { value: Some(_), .. }) = as_secret {
                if self.views.any_inside() {
                    return Ok((Child::Dir(child_path), valid_for));
                }
            }
            let as_folder = self.listing(ctx, &child_path);
            if let Ok(Cached { value: Some(l), .. }) = &as_folder {
                if l.shows_folder() {
                    return Ok((Child::Dir(child_path), valid_for));
                }
            }
            if let Some(found) = self.find_version(ctx, dir, name)? {
                return Ok(found);
            }
            let refused = |e: Option<&Error>| matches!(e, Some(Error::PermissionDenied(_)));
            // No secret of this name we may read (refused; or not found,
            // below a folder rather than beside a secret's known keys): a
            // folder we may not list may still be there.
            let no_secret = refused(as_secret.as_ref().err())
                || (!dir_is_secret && matches!(as_secret, Ok(Cached { value: None, .. })));
            if no_secret && refused(as_folder.as_ref().err()) {
                // We may not know: a directory that lists as EACCES, so that
                // paths below it the token may read stay reachable (a
                // policy that reads `secret/data/*` and lists nothing).
                return Ok((Child::Dir(child_path), valid_for));
            }
            if let Err(e) = as_secret.and(as_folder.map(|_| ())) {
                if !matches!(e, Error::PermissionDenied(_)) {
                    return Err(e);
                }
            }
            return Err(Error::NotFound);
        }
        // Nothing real has this name: it may name a version (`db@3`).
        match self.find_version(ctx, dir, name)? {
            Some(found) => Ok(found),
            None => Err(Error::NotFound),
        }
    }

    /// A file of the version of a secret the directory `dir` shows
    /// (`app/db@3`): what a view inside secrets shows of that version.
    fn find_in_version(
        &self,
        ctx: &OpContext,
        dir: &SecretPath,
        name: &str,
    ) -> Result<(Child, Duration)> {
        let cached = self.secret(ctx, dir)?;
        let version = cached.value.ok_or(Error::NotFound)?;
        let view = self.view_showing(&version, name).ok_or(Error::NotFound)?;
        let file = FileRef {
            secret: dir.clone(),
            view,
            name: name.to_string(),
        };
        Ok((Child::File { file, version }, cached.valid_for))
    }

    /// What `name` in `dir` stands for when it names a version of a
    /// secret there, looked up only (never listed): `db@3`, a directory
    /// of version 3 of `db` (views inside secrets), or `db@3.json`, the
    /// file version 3 of `db` shows as (views beside them). `None` when
    /// it names none, the version is deleted or destroyed, or the store
    /// keeps no versions.
    fn find_version(
        &self,
        ctx: &OpContext,
        dir: &SecretPath,
        name: &str,
    ) -> Result<Option<(Child, Duration)>> {
        if !self.source.capabilities().versions {
            return Ok(None);
        }
        for (view, v) in self.views.iter() {
            let secret_name = match v.placement() {
                Placement::Inside => Some(name.to_string()),
                Placement::Beside => v.secret_named(name),
            };
            let Some((base, number)) = secret_name.as_deref().and_then(names::split_version) else {
                continue;
            };
            let secret = dir.join(base).at_version(number);
            let cached = match self.secret(ctx, &secret) {
                Ok(c) => c,
                Err(Error::PermissionDenied(_) | Error::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let Some(version) = cached.value else {
                continue;
            };
            match v.placement() {
                Placement::Inside => return Ok(Some((Child::Dir(secret), cached.valid_for))),
                Placement::Beside if v.render(&version, name).is_some() => {
                    let file = FileRef {
                        secret,
                        view,
                        name: name.to_string(),
                    };
                    return Ok(Some((Child::File { file, version }, cached.valid_for)));
                }
                Placement::Beside => {}
            }
        }
        Ok(None)
    }

    /// A file shown beside the secret it is named after (`P.json`), if a
    /// view beside secrets shows `name` in `dir`.
    fn find_beside(
        &self,
        ctx: &OpContext,
        dir: &SecretPath,
        name: &str,
    ) -> Result<Option<(Child, Duration)>> {
        for (view, v) in self.views.iter() {
            if v.placement() != Placement::Beside {
                continue;
            }
            let Some(file) = self.file_ref(dir, view, name) else {
                continue;
            };
            let cached = match self.secret(ctx, &file.secret) {
                Ok(c) => c,
                Err(Error::PermissionDenied(_)) => continue,
                Err(e) => return Err(e),
            };
            if let Some(version) = cached.value {
                if v.render(&version, name).is_some() {
                    return Ok(Some((Child::File { file, version }, cached.valid_for)));
                }
                // A file whose bytes cannot be known now: its error, at
                // lookup already (see `secret_file_attr`).
                if let Some(e) = v.withheld(&version, name) {
                    return Err(e);
                }
            }
        }
        Ok(None)
    }

    /// The names in a directory: store folders and secrets, the files the
    /// views show of the secret, and what lives in memory.
    pub(super) fn list_dir(&self, ctx: &OpContext, dir: &SecretPath) -> Result<Vec<DirEntryInfo>> {
        if self.templates.is_some() {
            let names = self.template_names(dir)?;
            return Ok(names
                .into_iter()
                .map(|name| DirEntryInfo {
                    name,
                    is_dir: false,
                })
                .collect());
        }
        let mut entries: BTreeMap<String, bool> = BTreeMap::new();
        let mut denied = None;
        let mut found = false;
        match self.listing(ctx, dir) {
            Ok(Cached {
                value: Some(listing),
                ..
            }) => {
                found = listing.shows_folder();
                for e in listing
                    .iter()
                    .filter(|e| names::is_showable(&e.name) && self.entry_stands(dir, e))
                {
                    if e.folder {
                        entries.insert(e.name.clone(), true);
                        continue;
                    }
                    // A secret is a directory only where a view shows
                    // files inside it.
                    if self.views.any_inside() {
                        entries.insert(e.name.clone(), true);
                    }
                    for (_, view) in self.views.iter() {
                        let Some(file) = view.beside_name(&e.name) else {
                            continue;
                        };
                        if view.placement() == Placement::Beside
                            && names::is_showable(&file)
                            && !self.names.is_hidden(&dir.join(&file))
                        {
                            entries.entry(file).or_insert(false);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e @ Error::PermissionDenied(_)) => denied = Some(e),
            Err(e) => return Err(e),
        }
        match self.secret(ctx, dir) {
            Ok(Cached {
                value: Some(secret),
                ..
            }) => {
                found = true;
                let inside = self
                    .views
                    .iter()
                    .filter(|(_, v)| v.placement() == Placement::Inside);
                for (_, view) in inside {
                    for name in view.files(&secret) {
                        if self.names.is_hidden(&dir.join(&name)) {
                            continue;
                        }
                        // Where a file and a child share a name, the directory wins.
                        entries.entry(name).or_insert(false);
                    }
                }
            }
            Ok(_) => {}
            Err(e @ Error::PermissionDenied(_)) => {
                if !found {
                    denied = Some(e);
                }
            }
            Err(e) => return Err(e),
        }
        for name in self.names.local_dirs_in(dir) {
            entries.insert(name, true);
        }
        for name in self
            .names
            .new_files_in(dir)
            .into_iter()
            .chain(self.names.scratch_in(dir))
        {
            entries.entry(name).or_insert(false);
        }
        if let (true, Some(e)) = (entries.is_empty() && !found, denied) {
            // Nothing visible and something refused: say so rather than show
            // an empty directory.
            return Err(e);
        }
        Ok(entries
            .into_iter()
            .map(|(name, is_dir)| DirEntryInfo { name, is_dir })
            .collect())
    }

    /// Attributes of one entry of an open directory, for READDIRPLUS or
    /// `d_ino`. With `lookup`, the kernel holds a reference afterwards.
    pub fn entry_attr(
        &self,
        ctx: &OpContext,
        dir: Ino,
        entry: &DirEntryInfo,
        lookup: bool,
    ) -> Result<Attr> {
        let path = self.dir_path(dir)?;
        if self.templates.is_some() && !entry.is_dir {
            // A template that fails to render is listed all the same, with
            // attributes valid for no time: any use of it looks it up
            // again and gets `EIO`.
            let at = Name {
                parent: dir,
                name: &entry.name,
            };
            let kind = NodeKind::Template {
                name: entry.name.clone(),
            };
            let ino = self.names.remember(at, kind, lookup);
            return match self.template_attr(ctx, ino, &entry.name) {
                Err(Error::Template(_)) => {
                    Ok(self.file_attr(ino, 0, self.source.started(), Duration::ZERO))
                }
                other => other,
            };
        }
        if entry.is_dir {
            let child = Child::Dir(path.join(&entry.name));
            return self.remember(ctx, dir, &entry.name, child, self.config.cache.ttl, lookup);
        }
        // Everything a file can be, found as a lookup finds it (cached).
        match self.find_child(ctx, &path, &entry.name) {
            Ok((child, valid_for)) => {
                self.remember(ctx, dir, &entry.name, child, valid_for, lookup)
            }
            Err(e @ Error::LayerUnreadable { .. }) => self
                .withheld_entry(ctx, dir, &path, &entry.name, lookup)
                .ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// A file whose bytes cannot be known now (a key that a layer that
    /// cannot be read may override) is listed all the same, as a template
    /// that fails to render is: with attributes valid for no time, so
    /// that any use of it looks it up again and gets the error (never
    /// reads it as empty). `None` when `name` is no such file.
    fn withheld_entry(
        &self,
        ctx: &OpContext,
        dir: Ino,
        path: &SecretPath,
        name: &str,
        lookup: bool,
    ) -> Option<Attr> {
        self.views.iter().find_map(|(view, v)| {
            let file = self.file_ref(path, view, name)?;
            let version = self.secret(ctx, &file.secret).ok()?.value?;
            v.withheld(&version, name)?;
            let ino = self
                .names
                .remember(Name { parent: dir, name }, file.kind(), lookup);
            Some(self.file_attr(ino, 0, self.source.started(), Duration::ZERO))
        })
    }
}
