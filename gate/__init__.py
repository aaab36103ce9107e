"""gate/: width gates for width-dynamic inference (Flexible-BERT §5), built on ofa_flexbert's leaves.

A gate is a small MLP on the pooled state of the layer it follows; it picks, per input, the
width of the next block of layers.  The gates run inside the routed encoder as its
between-layers hook (:class:`gate.modules.GateRouter`), so a batch whose inputs choose
different widths runs in one forward.  ``--stage gate`` (``ofa_flexbert/stages/gate.py``)
trains them on a frozen backbone.

Modules, one job each:

* :mod:`gate.settings` -- where the gates sit and what their classes mean (pure, no paddle);
* :mod:`gate.modules` -- the gate MLPs, what they read, and the router hook;
* :mod:`gate.targets` -- each input's target class: the smallest width that gets it right;
* :mod:`gate.loss` -- class weights, the Gumbel-softmax loss and its temperature schedule;
* :mod:`gate.io` -- saving gates beside the model and loading them with it.

This package uses ``ofa_flexbert``'s leaves (routes, encoder, outputs), never its stages or CLI.
"""
