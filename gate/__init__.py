"""gate/: the learned decision modules of adaptive inference -- width gates and early-exit off-ramps.

A gate is a small MLP on the pooled state of the layer it follows; it picks, per input, the
width of the next block of layers.  An off-ramp is a pooler and classifier after a chosen layer,
where a confident input may leave.  Both run inside the routed encoder as its between-layers
hook (:class:`gate.modules.GateRouter`, :class:`gate.ramps.ExitCheck`), so a batch whose inputs
choose different widths and exits runs in one forward.  ``--stage gate``
(``ofa_flexbert/app/stages/gate.py``) trains them on a frozen backbone;
``ofa_flexbert.adaptive.runner`` runs a model with them as an inference setting says.

Modules, one job each:

* :mod:`gate.settings` -- where the gates sit, what their classes mean, their MACs (pure, no paddle);
* :mod:`gate.modules` -- the gate MLPs, what they read, and the router hook;
* :mod:`gate.targets` -- each input's target class: the smallest width that gets it right (or agrees
  with the widest);
* :mod:`gate.diagnostics` -- whether gates route by input: copying, perfect gates, random routes;
* :mod:`gate.loss` -- class weights, the Gumbel-softmax loss and its temperature schedule; route
  training's distillation and MACs hinge;
* :mod:`gate.relaxed` -- straight-through routing, for gates trained on the routes they take;
* :mod:`gate.ramps` -- the off-ramps, the entropy exit check, their distillation;
* :mod:`gate.io` -- saving gates and off-ramps beside the model and loading them with it.

This package uses ``ofa_flexbert``'s leaves (``engine``, ``glue.tasks``, ``store.atomic``, ``errors``),
never its stages, training loop, deployment or CLI (docs/design.md).
"""
