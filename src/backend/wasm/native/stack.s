# Each worker instance runs on its own stack: the linker's __stack_pointer global starts every instance at the
# same address, so the worker sets it to the top of the stack the JS side carved out for it before any C runs.
.globaltype __stack_pointer, i32

.globl set_stack_pointer
.export_name set_stack_pointer, set_stack_pointer
set_stack_pointer:
  .functype set_stack_pointer (i32) -> ()
  local.get 0
  global.set __stack_pointer
  end_function
