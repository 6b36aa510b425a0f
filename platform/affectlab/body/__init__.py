"""Body models through smplx without chumpy: ``convert`` (released pickles -> npz),
``models`` (FLAME / SMPL layers), ``standin`` (tiny seeded models), ``rotations`` (roma),
``render`` (headless mesh / skeleton video). Import the submodules you need; this package
imports nothing heavy by itself."""
