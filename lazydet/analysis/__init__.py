"""Look and measure: training curves (``curves``), error analysis of COCO results (``errors``),
model cost (``cost``) and speed (``speed``). The command is ``python -m lazydet.analyze``;
see ``docs/analysis.md``. matplotlib is imported only when a figure is drawn."""
