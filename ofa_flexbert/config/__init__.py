"""The run configuration: one dataclass filled from defaults < configs/<task>.yaml < flags.

* :mod:`.args` -- :class:`RunArgs`, a field per flag with its facts (help section, readers, fingerprint);
* :mod:`.sources` -- the YAML files and the command line, merged by :func:`resolve`;
* :mod:`.checks` -- validation and the "no effect" notes.

See README "Configuration" for the user's view.
"""
from .args import (CONFIG_DIR, FIELDS, FINGERPRINT, HELP_GROUPS, STAGES, TRAINING, TRAINING_PHASES, UNRECORDED,
                   RunArgs, task_data_dir, to_dict)
from .checks import NO_EFFECT, no_effect_notes, parse_budget, validate
from .sources import OneLineParser, add_run_flags, load_yaml_defaults, resolve

__all__ = ["CONFIG_DIR", "FIELDS", "FINGERPRINT", "HELP_GROUPS", "NO_EFFECT", "STAGES", "TRAINING", "TRAINING_PHASES",
           "UNRECORDED", "OneLineParser", "RunArgs", "add_run_flags", "load_yaml_defaults", "no_effect_notes", "parse_budget",
           "resolve",
           "task_data_dir", "to_dict", "validate"]
