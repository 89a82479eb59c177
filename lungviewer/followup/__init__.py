"""Follow-up reading (DESIGN.md method P): the prior CT registered to the current one on the
lungs, every nodule matched across the two exams, growth, volume doubling time and the
Lung-RADS v2022 follow-up rules. Qt-free: plain numpy / SimpleITK / scipy."""
