"""Training objectives, one file each with its formula; `OBJECTIVES[name].loss(model, batch, ...)`."""

from distgfn.objectives import db, fm, tb

OBJECTIVES = {"fm": fm, "tb": tb, "db": db}
