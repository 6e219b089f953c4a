//! `tre-spank image load|pull|list|remove`: the node's site image stores (approved
//! images only: the same reference grammar and registry allow-list as jobs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tre_spank::host::image_store::Site;
use tre_spank::rules::image_store::approved;
use tre_spank::rules::options::Runtime;

use crate::plugin_config::load;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What every image command takes: which config, which runtime's store.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The config file, instead of the plugstack line's
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
    /// Whose store: podman's image store or apptainer's SIF directory
    #[arg(long, value_name = "podman|apptainer", default_value = "podman", value_parser = crate::runtime_arg)]
    pub runtime: Runtime,
    /// podman only: which of podman.image_stores (default: the first)
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Put the image of an archive (docker-archive or oci-archive tar; a SIF for
    /// apptainer) into the store under the name IMAGE
    Load {
        #[command(flatten)]
        store: StoreArgs,
        /// The archive: a regular file with one link, root's and writable by root
        /// only; no symbolic link on its path is followed
        #[arg(long, value_name = "FILE")]
        archive: PathBuf,
        /// The approved reference (the jobs' grammar and registry allow-list)
        #[arg(value_name = "IMAGE")]
        image: String,
    },
    /// Pull IMAGE from its registry into the store
    Pull {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(value_name = "IMAGE")]
        image: String,
    },
    /// List the store's images (podman) or SIF files (apptainer)
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove IMAGE from the store (running jobs keep what they use)
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(value_name = "IMAGE")]
        image: String,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Load { .. } => "load",
            Action::Pull { .. } => "pull",
            Action::List { .. } => "list",
            Action::Remove { .. } => "remove",
        }
    }

    fn store(&self) -> &StoreArgs {
        match self {
            Action::Load { store, .. }
            | Action::Pull { store, .. }
            | Action::List { store }
            | Action::Remove { store, .. } => store,
        }
    }

    fn image(&self) -> Option<&str> {
        match self {
            Action::Load { image, .. }
            | Action::Pull { image, .. }
            | Action::Remove { image, .. } => Some(image),
            Action::List { .. } => None,
        }
    }
}

pub fn run(args: &Args) -> ExitCode {
    let action = &args.action;
    let name = action.name();
    let o = action.store();
    if o.store.is_some() && o.runtime == Runtime::Apptainer {
        log::error!("--store is for podman; apptainer's SIF files go to apptainer.sif_dir");
        return ExitCode::from(2);
    }
    if !nix::unistd::Uid::effective().is_root() {
        log::error!("image {name}: only root manages the site image stores");
        return ExitCode::from(2);
    }
    let config = match load(o.config.as_deref()) {
        Ok((c, _, _)) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let site = Site {
        config: &config,
        runtime: o.runtime,
        store: o.store.as_deref(),
    };
    let image = match action.image().map(|r| approved(&config, r)).transpose() {
        Ok(i) => i,
        Err(e) => {
            log::error!("image {name}: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match (action, &image) {
        (Action::Load { archive, .. }, Some(image)) => site.load(image, archive).map(Some),
        (Action::Pull { .. }, Some(image)) => site.pull(image).map(Some),
        (Action::Remove { .. }, Some(image)) => site.remove(image).map(Some),
        _ => site.list().map(|()| None),
    };
    match result {
        Ok(line) => {
            if let Some(line) = line {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("image {name}: {e}");
            ExitCode::from(1)
        }
    }
}
