"""``python -m rexthinker_rl.config_doc``: the command that regenerates docs/configuration.md (``make docs``); the
generator is ``rexthinker_rl.config.doc``."""

from rexthinker_rl.config.doc import main

if __name__ == "__main__":
    main()
