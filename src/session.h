/* What controls.c needs of a session: its model, its controls and the
 * position a change would apply from. */
#ifndef MOE_SESSION_H
#define MOE_SESSION_H

#include "controls.h"
#include "model.h"

controls *session_controls(moe_session *s);
const controls *session_controls_const(const moe_session *s);
const moe_model *session_model(const moe_session *s);
/* Log a re-prefill at the current position (controls.c owns the log). */
void controls_note_reprefill(moe_session *s);

#endif
